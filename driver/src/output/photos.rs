//! What the photo commands print: faces added, build reports, encoded photos.

use super::short_uri;
use crate::photos::add::AddedFace;
use crate::photos::build::BuildReport;
use crate::photos::encode::ImageOut;

/// Faces added by `faces add`.
pub fn added_faces(faces: &[AddedFace]) -> String {
    let mut out = String::new();
    for f in faces {
        let bbox = f
            .bbox
            .as_ref()
            .map(|b| format!(" box {b:?}"))
            .unwrap_or_default();
        out.push_str(&format!(
            "face {} ({}){bbox} from {}{}\n",
            f.face_id,
            f.source,
            f.image,
            if f.known {
                " — photo already known, not encoded again".to_string()
            } else {
                format!(" — stored at {}", short_uri(&f.image_uri))
            }
        ));
    }
    out
}

/// What a dataset build did, with every photo that failed.
pub fn build(r: &BuildReport) -> String {
    let mut out = format!(
        "build {}: {} photo(s): {} encoded ({} faces), {} already known, {} duplicate(s), {} failed — {:.1} s ({:.1} s encoding on {} worker(s))\n",
        r.build_id,
        r.photos,
        r.encoded,
        r.faces,
        r.known,
        r.duplicates,
        r.failures.len(),
        r.total_secs,
        r.dataflow_secs,
        r.workers
    );
    if let Some(line) = time_spent(r) {
        out.push_str(&line);
    }
    match &r.dataset {
        Some(label) => out.push_str(&format!("new version {label}\n")),
        None => out.push_str("no new faces: no new version\n"),
    }
    if !r.failures.is_empty() {
        out.push_str("failed photos:\n");
        for f in &r.failures {
            out.push_str(&format!("  [{}] {}\n", f.stage, short_uri(&f.message)));
        }
    }
    out
}

/// Where the workers' time went, as shares of their busy time, and the driver's registering:
/// `time: encode 61%, detect_hog 30%, … of 12.3 worker-s; registering 0.4 s`.
fn time_spent(r: &BuildReport) -> Option<String> {
    let total = r.stage_secs.total();
    if total <= 0.0 {
        return None;
    }
    let mut stages = r.stage_secs.named().to_vec();
    stages.retain(|(_, secs)| *secs > 0.0);
    stages.sort_by(|a, b| b.1.total_cmp(&a.1));
    let shares: Vec<String> = stages
        .iter()
        .map(|(name, secs)| format!("{name} {:.0}%", 100.0 * secs / total))
        .collect();
    Some(format!(
        "time: {} of {total:.1} worker-s; registering {:.1} s\n",
        shares.join(", "),
        r.register_secs
    ))
}

/// One encoded photo: its size, then a line per face with its box and the encoding's head.
pub fn encoded(out: &ImageOut) -> String {
    if out.error.is_some() {
        return String::new();
    }
    let mut text = format!(
        "{} ({}×{}): {} face(s)\n",
        out.image,
        out.width,
        out.height,
        out.faces.len()
    );
    for (i, face) in out.faces.iter().enumerate() {
        let [top, right, bottom, left] = face.top_right_bottom_left;
        let head: Vec<String> = face
            .encoding
            .iter()
            .take(4)
            .map(|v| format!("{v:.4}"))
            .collect();
        text.push_str(&format!(
            "  face {}: left {left}, top {top}, right {right}, bottom {bottom}; encoding [{}, …] ({} values)\n",
            i + 1,
            head.join(", "),
            face.encoding.len()
        ));
    }
    text
}
