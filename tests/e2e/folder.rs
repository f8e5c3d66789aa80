use std::io::Write;
use std::time::Duration;

use wiko_e2e::{Agent, Camera, Cloud, Source, bin, free_port, wait_until};

/// A hot folder: complete files are taken once and moved to `done/`, a file still being written
/// is not taken early, an unreadable file goes to `rejected/` once and is not retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hot_folder_takes_complete_files_once_and_rejects_unreadable_ones() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud::start(&dir.path().join("cloud"), free_port(), free_port())
        .await
        .unwrap();
    let drop_dir = dir.path().join("drop");
    std::fs::create_dir_all(&drop_dir).unwrap();
    let images = dir.path().join("images");
    let status = std::process::Command::new(bin("wiko-agent"))
        .args([
            "synth",
            "--out",
            images.to_str().unwrap(),
            "--count",
            "3",
            "--defect-rate",
            "0",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let agent_dir = dir.path().join("agent");
    let http = free_port();
    let cam = Camera {
        name: "drop",
        station: "assembly",
        sku: "WK-KN-200",
        source: Source::Folder(drop_dir.clone()),
    };
    Agent::write_config(&agent_dir, cloud.port, http, &[cam]).unwrap();
    let agent = Agent::start(&agent_dir, http).await.unwrap();

    for i in 0..3 {
        let src = images.join(format!("images/WK-KN-200_{i:05}.jpg"));
        std::fs::copy(src, drop_dir.join(format!("part-{i}.jpg"))).unwrap();
    }
    std::fs::write(drop_dir.join("garbage.jpg"), b"not an image at all").unwrap();
    // A file written slowly, in two halves, 1 s apart: it must not be taken half-written.
    let slow = std::fs::read(images.join("images/WK-PR-090_00000.jpg")).unwrap();
    let mut f = std::fs::File::create(drop_dir.join("slow.jpg")).unwrap();
    f.write_all(&slow[..slow.len() / 2]).unwrap();
    f.flush().unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    f.write_all(&slow[slow.len() / 2..]).unwrap();
    drop(f);

    let analyses = wait_until(
        Duration::from_secs(60),
        "four parts in the cloud",
        || async {
            let all = cloud.analyses().await.ok()?;
            (all.len() >= 4).then_some(all)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.process.log_text()));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let analyses_after = cloud.analyses().await.unwrap();
    assert_eq!(analyses_after.len(), 4, "each file once; the garbage never");
    assert!(
        analyses.iter().all(|a| a["status"] != "failed"),
        "no half-written file was taken"
    );
    let mut part_ids: Vec<String> = analyses_after
        .iter()
        .map(|a| a["part_id"].as_str().unwrap().to_string())
        .collect();
    part_ids.sort();
    assert_eq!(part_ids, ["part-0", "part-1", "part-2", "slow"]);
    let listing = |sub: &str| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(drop_dir.join(sub))
            .map(|d| {
                d.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    assert_eq!(
        listing("done"),
        ["part-0.jpg", "part-1.jpg", "part-2.jpg", "slow.jpg"]
    );
    assert_eq!(listing("rejected"), ["garbage.jpg"]);
    let log = agent.process.log_text();
    assert_eq!(
        log.matches("unreadable image moved to the reject folder")
            .count(),
        1,
        "{log}"
    );
}
