//! `wiko-cloud model fit | score | eval` driven as a script would drive them, on synthetic
//! parts written by `wiko-agent synth`.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use wiko_e2e::bin;

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(bin(program)).args(args).output().unwrap()
}

fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The rows of `manifest` whose `group_id` is `sku`, as a manifest beside it.
fn one_sku(manifest: &Path, sku: &str) -> std::path::PathBuf {
    let mut reader = csv::Reader::from_path(manifest).unwrap();
    let path = manifest.with_file_name(format!("{sku}.csv"));
    let mut writer = csv::Writer::from_path(&path).unwrap();
    writer.write_record(reader.headers().unwrap()).unwrap();
    for row in reader.records().map(Result::unwrap) {
        if &row[7] == sku {
            writer.write_record(&row).unwrap();
        }
    }
    writer.flush().unwrap();
    path
}

#[test]
fn a_script_fits_scores_and_evaluates_models_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let synth = dir.path().join("synth");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let out = run(
        "wiko-agent",
        &["synth", "--out", &s(&synth), "--count", "40", "--seed", "5"],
    );
    assert!(out.status.success(), "{out:?}");
    let manifest = synth.join("manifest.csv");
    let knives = one_sku(&manifest, "WK-KN-200");

    // Fit from a manifest: only its good rows.
    let model = dir.path().join("kn.model");
    let out = run(
        "wiko-cloud",
        &[
            "model",
            "fit",
            "--good",
            &s(&knives),
            "--out",
            &s(&model),
            "--sku",
            "WK-KN-200",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    assert!(model.metadata().unwrap().len() > 0);

    // Score the manifest: one JSON object per row, in order, each with its heat map.
    let heat = dir.path().join("heat");
    let out = run(
        "wiko-cloud",
        &[
            "model",
            "score",
            "--model",
            &s(&model),
            "--heatmap",
            &s(&heat),
            &s(&knives),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let lines = json_lines(&out);
    let rows = wiko_e2e::manifest_rows(&knives).unwrap();
    assert_eq!(lines.len(), rows.len());
    let (mut defects, mut found, mut false_rejects) = (0, 0, 0);
    for (line, row) in lines.iter().zip(&rows) {
        assert_eq!(line["file"], row["file"].as_str());
        assert!(line["score"].is_f64() && line["ms"].is_f64(), "{line}");
        let detected = line["defect_detected"].as_bool().unwrap();
        if row["label"] == "good" {
            false_rejects += usize::from(detected);
        } else {
            defects += 1;
            found += usize::from(detected);
            let top = &line["defects"][0];
            assert!(top["type"].is_string() && top["score"].is_f64(), "{line}");
            assert_eq!(top["bbox"].as_array().map(Vec::len), Some(4), "{line}");
        }
        let picture = heat.join(format!(
            "images_{}",
            row["file"].trim_start_matches("images/")
        ));
        let picture = picture.with_extension("heat.png");
        let (w, h) = image::image_dimensions(&picture)
            .unwrap_or_else(|e| panic!("{}: {e}", picture.display()));
        assert_eq!((w, h), (640, 480));
    }
    assert!(
        defects > 0 && found == defects,
        "found {found} of {defects}"
    );
    assert_eq!(false_rejects, 0);

    // Image files, one of them unreadable: the others are scored, the bad one is an error line
    // and the exit status says so.
    let garbage = dir.path().join("garbage.jpg");
    std::fs::write(&garbage, b"not a jpeg").unwrap();
    let first = synth.join("images/WK-KN-200_00000.jpg");
    let out = run(
        "wiko-cloud",
        &[
            "model",
            "score",
            "--model",
            &s(&model),
            &s(&garbage),
            &s(&first),
        ],
    );
    assert!(!out.status.success());
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2);
    assert!(lines[0]["error"].is_string(), "{}", lines[0]);
    assert!(lines[1]["score"].is_f64(), "{}", lines[1]);

    // Evaluate both SKUs, one model each.
    let out = run(
        "wiko-cloud",
        &[
            "model",
            "eval",
            "--manifest",
            &s(&manifest),
            "--group-by",
            "group_id",
            "--train-good",
            "15",
            "--json",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let groups = json_lines(&out);
    assert_eq!(groups.len(), 2);
    for g in &groups {
        assert_eq!(
            (g["model"].as_str(), g["trained_on"].as_u64()),
            (Some("aligned"), Some(15))
        );
        for (metric, floor) in [("auroc", 0.95), ("recall", 0.9), ("region_hit_rate", 0.9)] {
            let value = g[metric].as_f64().unwrap_or(0.0);
            assert!(value >= floor, "{}: {metric} {value}", g["group"]);
        }
        assert!(g["type_agreement"].is_f64(), "{g}");
    }
}
