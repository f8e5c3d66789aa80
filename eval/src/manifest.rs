//! Dataset manifests in the format of `shared/datasets`: a CSV file with a header row and at
//! least the columns `file` and `label` (`good` or `defect`); `defect_type` and `mask_file` are
//! optional, any other column can group rows. Paths are relative to the manifest's folder.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One labelled image.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The `file` column as written in the manifest.
    pub name: String,
    /// The image's path (the manifest's folder joined with `file`).
    pub path: PathBuf,
    pub defect: bool,
    pub defect_type: String,
    pub mask: Option<PathBuf>,
    /// Every column, by header name.
    pub columns: HashMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Image file extensions taken from a folder.
const IMAGE_EXTENSIONS: [&str; 6] = ["jpg", "jpeg", "png", "tif", "tiff", "bmp"];

/// Reads a manifest.
pub fn read(path: &Path) -> Result<Vec<Row>, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path.parent().unwrap_or(Path::new("."))).map_err(|message| {
        ManifestError::Invalid {
            path: path.to_path_buf(),
            message,
        }
    })
}

/// Parses manifest text; paths are joined to `base`.
pub fn parse(text: &str, base: &Path) -> Result<Vec<Row>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| format!("header row: {e}"))?
        .iter()
        .map(str::to_string)
        .collect();
    for needed in ["file", "label"] {
        if !headers.iter().any(|h| h == needed) {
            return Err(format!("no `{needed}` column"));
        }
    }
    let mut rows = Vec::new();
    for (index, record) in reader.records().enumerate() {
        let line = index + 2;
        let record = record.map_err(|e| format!("line {line}: {e}"))?;
        let columns: HashMap<String, String> = headers
            .iter()
            .cloned()
            .zip(record.iter().map(str::to_string))
            .collect();
        let get = |name: &str| columns.get(name).map(String::as_str).unwrap_or("");
        let name = get("file").to_string();
        if name.is_empty() {
            return Err(format!("line {line}: empty `file`"));
        }
        let defect = match get("label") {
            "good" => false,
            "defect" => true,
            other => {
                return Err(format!(
                    "line {line}: label `{other}` (expected good or defect)"
                ));
            }
        };
        let mask = Some(get("mask_file"))
            .filter(|m| !m.is_empty())
            .map(|m| base.join(m));
        rows.push(Row {
            path: base.join(&name),
            name,
            defect,
            defect_type: get("defect_type").to_string(),
            mask,
            columns,
        });
    }
    Ok(rows)
}

/// The image files of a folder (by extension), sorted by name, as good rows.
pub fn folder(dir: &Path) -> Result<Vec<Row>, ManifestError> {
    let read_error = |source| ManifestError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_error)? {
        let path = entry.map_err(read_error)?.path();
        let is_image = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
        if is_image && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths.into_iter().map(image_row).collect())
}

/// A row for an image given on the command line (label unknown: taken as good).
pub fn image_row(path: PathBuf) -> Row {
    Row {
        name: path.display().to_string(),
        path,
        defect: false,
        defect_type: String::new(),
        mask: None,
        columns: HashMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rows_with_paths_relative_to_the_manifest() {
        let text = "file,label,defect_type,mask_file,group_id\n\
                    images/a.jpg,good,none,,g1\n\
                    images/b.jpg,defect,pit,masks/b.png,g2\n";
        let rows = parse(text, Path::new("/data")).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].path, Path::new("/data/images/a.jpg"));
        assert!(!rows[0].defect && rows[0].mask.is_none());
        assert!(rows[1].defect);
        assert_eq!(
            rows[1].mask.as_deref(),
            Some(Path::new("/data/masks/b.png"))
        );
        assert_eq!(rows[1].columns["group_id"], "g2");
    }

    #[test]
    fn bad_manifests_say_where() {
        let base = Path::new(".");
        assert_eq!(parse("name,label\n", base), Err("no `file` column".into()));
        let err = parse("file,label\na.jpg,maybe\n", base).unwrap_err();
        assert!(err.contains("line 2") && err.contains("maybe"), "{err}");
        assert!(parse("file,label\n,good\n", base).is_err());
    }

    #[test]
    fn a_folder_lists_its_images_sorted() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.JPG", "a.png", "notes.txt"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let rows = folder(dir.path()).unwrap();
        let names: Vec<_> = rows.iter().map(|r| r.path.file_name().unwrap()).collect();
        assert_eq!(names, ["a.png", "b.JPG"]);
    }
}
