//! Where a build's time goes, stage by stage: the figures `dataset build` reports and
//! `make build-bench` compares with Python face_recognition's (README: Benchmarks).
//!
//! Each worker thread adds up the wall time of its own stages; a build sums its workers, so the
//! figures are thread-seconds and their total is about the workers' busy time.

use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Seconds spent in each stage of turning photos into encodings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StageSecs {
    /// Reading the photo's bytes from the folder or S3.
    pub read: f64,
    /// Decoding to RGB (and hashing the bytes).
    pub decode: f64,
    /// HOG detection, the upsampling and scaling for it included.
    pub detect_hog: f64,
    /// dlib's CNN detector (only on photos where HOG found nothing, under `--detector auto`).
    pub detect_cnn: f64,
    /// The landmark predictor that aligns each face.
    pub landmarks: f64,
    /// The ResNet that turns each aligned face into its 128-d encoding.
    pub encode: f64,
    /// Writing each chunk's part to the staging area.
    pub write: f64,
}

impl StageSecs {
    /// Adds `other`'s seconds to these.
    pub fn add(&mut self, other: &StageSecs) {
        self.read += other.read;
        self.decode += other.decode;
        self.detect_hog += other.detect_hog;
        self.detect_cnn += other.detect_cnn;
        self.landmarks += other.landmarks;
        self.encode += other.encode;
        self.write += other.write;
    }

    /// The stages by name, in pipeline order.
    pub fn named(&self) -> [(&'static str, f64); 7] {
        [
            ("read", self.read),
            ("decode", self.decode),
            ("detect_hog", self.detect_hog),
            ("detect_cnn", self.detect_cnn),
            ("landmarks", self.landmarks),
            ("encode", self.encode),
            ("write", self.write),
        ]
    }

    /// All stages together.
    pub fn total(&self) -> f64 {
        self.named().iter().map(|(_, s)| s).sum()
    }
}

/// Runs `f` and adds its wall time to `*slot`.
pub fn timed<T>(slot: &mut f64, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let value = f();
    *slot += started.elapsed().as_secs_f64();
    value
}
