//! The golden-sample analyzer on real photographs (`shared/datasets`), through the same
//! evaluation as `wiko-cloud model eval --split-by group_id --folds 5`, with the method `auto`
//! picks: whole objects are held out, each fold scored by a model fitted on the other
//! objects' good images only. Floors sit below what was measured on 2026-12-06 (model format
//! 10; mean AUROC over the folds (spread), hit rate of the top region): metal plates, patch,
//! 0.993 (0.014), 97.2%; BSData, fixed, 1.000 (0.000), 57.5%; KolektorSDD, texture, 0.923
//! (0.130), 75.0%; magnetic tiles, texture, 0.878 (0.089), 27.5%; the same to the digit with
//! model format 11 (2026-12-07). Since the calibration holds out whole parts (the manifest's
//! `group_id`, 2026-12-07): BSData 1.000 (0.000), 50.0%, no false reject of 58 (3.4% before);
//! KolektorSDD 0.923 (0.130), 70.0%; plates and tiles unchanged. They catch a regression.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use wiko_eval::manifest;
use wiko_eval::{Training, evaluate_folds, evaluate_group};
use wiko_inspect::FitOptions;

/// `<set>/manifest.csv` of `shared/datasets`: where `WIKO_DATASETS` says, or beside the
/// workspace (`../shared/datasets`).
fn dataset(set: &str) -> PathBuf {
    let root = std::env::var_os("WIKO_DATASETS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets"),
        PathBuf::from,
    );
    let manifest = root.join(set).join("manifest.csv");
    assert!(
        manifest.exists(),
        "{} is missing: set WIKO_DATASETS to the shared/datasets folder",
        manifest.display()
    );
    manifest
}

/// Held-out evaluation of `rows` by object: (method, mean AUROC, region hit rate, false-reject
/// rate at the calibrated threshold).
fn held_out(name: &str, rows: &[&manifest::Row]) -> (String, f64, f64, f64) {
    let report = evaluate_folds(name, rows, "group_id", 5, &FitOptions::default(), None).unwrap();
    eprintln!("{name}: {report:?}");
    assert_eq!(report.errors, 0);
    assert_eq!(report.fold_auroc.len(), 5);
    (
        report.model,
        report.auroc_mean.unwrap(),
        report.pooled.region_hit_rate.unwrap(),
        report.pooled.false_reject_rate.unwrap(),
    )
}

#[test]
fn metal_plates_that_hang_at_any_angle_are_judged_on_objects_never_seen() {
    let rows = manifest::read(&dataset("metal_plate")).unwrap();
    let (method, auroc, hit, _) = held_out("metal_plate", &rows.iter().collect::<Vec<_>>());
    assert_eq!(method, "patch", "the plates turn by tens of degrees");
    assert!(auroc >= 0.98, "AUROC {auroc:.3}");
    assert!(hit >= 0.9, "top region on the defect in {hit:.3}");
}

#[test]
fn real_surfaces_keep_their_floor_on_objects_never_seen() {
    let rows = manifest::read(&dataset("real_surface_defects")).unwrap();
    // False rejects of good images never seen: at most twice the stated 1% (one of 58),
    // KolektorSDD one of its 20 (measured: none anywhere). See: issue #18
    for (source, method, floor, hit_floor, frr_ceiling) in [
        ("BSData", "fixed", 0.97, 0.45, 0.02),
        ("KolektorSDD", "texture", 0.85, 0.6, 0.05),
        ("Magnetic-tile", "texture", 0.83, 0.2, 0.02),
    ] {
        let members: Vec<&manifest::Row> = rows
            .iter()
            .filter(|r| r.columns["source_repo"].contains(source))
            .collect();
        let (got, auroc, hit, frr) = held_out(source, &members);
        assert_eq!(got, method, "{source}");
        assert!(auroc >= floor, "{source}: AUROC {auroc:.3} under {floor}");
        assert!(hit >= hit_floor, "{source}: hit {hit:.3} under {hit_floor}");
        assert!(frr <= frr_ceiling, "{source}: false rejects {frr:.3}");
    }
}

/// NEU-DET has no good image: each image is scored by a model of the mask-free surface of the
/// others. Measured on 2026-11-27 (model format 8): recall 41.7% (scratches 6 of 6; inclusion
/// 4 of 6, pitted surface 2; crazing, patches and rolled-in scale, which cover most of the
/// strip, 1 each).
#[test]
fn neu_is_measured_on_the_surface_around_its_defects() {
    let rows = manifest::read(&dataset("real_surface_defects")).unwrap();
    let members: Vec<&manifest::Row> = rows
        .iter()
        .filter(|r| r.columns["source_repo"].contains("NEU-DET"))
        .collect();
    let report = evaluate_group("NEU", &members, None, &FitOptions::default()).unwrap();
    eprintln!("NEU: {report:?}");
    assert_eq!(report.training, Training::ClearPartsOfOthers);
    assert_eq!(report.errors, 0);
    assert_eq!((report.metrics.good, report.metrics.defect), (0, 36));
    assert_eq!(report.metrics.auroc, None, "no good image to rank against");
    let recall = report.metrics.recall.unwrap();
    assert!(recall >= 0.36, "recall {recall:.2}");
    let scratches = report
        .metrics
        .recall_by_type
        .iter()
        .find(|t| t.defect_type == "scratches")
        .unwrap();
    assert!(scratches.detected >= 5, "{scratches:?}");
}
