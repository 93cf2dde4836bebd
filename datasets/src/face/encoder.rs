//! Face detection, landmarks and 128-d encodings with dlib, as Python face_recognition 1.3.0 does
//! them: HOG (or CNN) detection on the image upsampled by dlib's own `pyramid_up`, landmarks on
//! the original image, and the ResNet encoder on 150 px chips with 0.25 padding.
//!
//! dlib's models are `Send` but not `Sync`: one [`Encoder`] per thread.

use crate::error::{DatasetError, Result};
use crate::face::models::ModelPaths;
use crate::face::timings::{StageSecs, timed};
use dlib_face_recognition::{
    FaceDetector, FaceDetectorCnn, FaceDetectorTrait, FaceEncoderNetwork, FaceEncoderTrait,
    ImageMatrix, LandmarkPredictor, LandmarkPredictorTrait, Rectangle,
};
use image::RgbImage;
use serde::{Deserialize, Serialize};
use std::cell::Cell;

/// Which face detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Detector {
    /// dlib's HOG frontal face detector (fast).
    Hog,
    /// dlib's CNN (MMOD) detector (slower, finds more poses).
    Cnn,
    /// HOG first, and the CNN only on a photo where HOG found nothing: every face the CNN
    /// finds, at HOG's cost for the photos HOG handles.
    Auto,
}

impl Detector {
    /// The name of the flag value and of `faces.detector`.
    pub fn as_str(self) -> &'static str {
        match self {
            Detector::Hog => "hog",
            Detector::Cnn => "cnn",
            Detector::Auto => "auto",
        }
    }
}

impl std::str::FromStr for Detector {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "hog" => Ok(Detector::Hog),
            "cnn" => Ok(Detector::Cnn),
            "auto" => Ok(Detector::Auto),
            other => Err(format!(
                "unknown detector {other:?} (expected auto, hog or cnn)"
            )),
        }
    }
}

/// Which landmark model aligns faces before encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Landmarks {
    /// 5 points (what face_recognition uses by default, `model="small"`).
    Five,
    /// 68 points (`model="large"`).
    SixtyEight,
}

/// How to find and encode faces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncoderOptions {
    /// Detector.
    pub detector: Detector,
    /// How many times the image is upsampled (×2 each) before detection; finds smaller faces.
    pub upsample: u32,
    /// Landmark model.
    pub landmarks: Landmarks,
    /// Longest side an image is detected at; larger images are scaled down for detection and the
    /// boxes mapped back (landmarks and encodings always use the full image).
    pub max_detect_side: u32,
}

impl Default for EncoderOptions {
    fn default() -> Self {
        // face_recognition's defaults: HOG, upsample once, 5-point landmarks. The size bound is
        // above the 2333 px of its test photos, so results stay comparable with the reference.
        EncoderOptions {
            detector: Detector::Hog,
            upsample: 1,
            landmarks: Landmarks::Five,
            max_detect_side: 2400,
        }
    }
}

/// Longest side, in pixels, of the image `Auto`'s CNN fallback runs on: the photo is upsampled
/// for it (up to `upsample` times) only while it stays within this bound, so a 300 px photo is
/// scanned at 602 px and a 400 px one as it is. The fallback runs on every photo without a HOG
/// face, most of which hold no face at all, and its cost grows with the pixels: on the
/// build-bench corpus (README: Benchmarks), upsampling photos up to 1,024 px instead found 15
/// more faces of 6,693 (57 px ones in 400 px photos) for 2.3× the CNN's time (115 s, not 49).
pub const CNN_FALLBACK_MAX_SIDE: usize = 640;

/// The size dlib's `pyramid_up` gives a `width`×`height` image: `pyramid_down<2>::rect_up` of
/// the image rectangle, whose bottom-right corner (w − 1, h − 1) maps to
/// ((w − 1 + 1.25) · 2, (h − 1 + 0.75) · 2), rounded with floor(v + 0.5) to (2w + 1, 2h).
pub fn pyramid_up_size(width: usize, height: usize) -> (usize, usize) {
    (2 * width + 2, 2 * height + 1)
}

/// A face box in image pixels, inclusive, as dlib reports it (it may reach past the image edge).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaceBox {
    /// Left column.
    pub left: i64,
    /// Top row.
    pub top: i64,
    /// Right column.
    pub right: i64,
    /// Bottom row.
    pub bottom: i64,
}

impl FaceBox {
    /// `(top, right, bottom, left)` clipped to a `width`×`height` image, as face_recognition's
    /// `face_locations` returns it.
    pub fn css_clipped(&self, width: u32, height: u32) -> [i64; 4] {
        [
            self.top.max(0),
            self.right.min(i64::from(width)),
            self.bottom.min(i64::from(height)),
            self.left.max(0),
        ]
    }

    /// The box clipped to a `width`×`height` image.
    pub fn clipped(&self, width: u32, height: u32) -> FaceBox {
        let [top, right, bottom, left] = self.css_clipped(width, height);
        FaceBox {
            left,
            top,
            right,
            bottom,
        }
    }

    /// Area in pixels (for picking the largest face).
    pub fn area(&self) -> i64 {
        (self.right - self.left + 1).max(0) * (self.bottom - self.top + 1).max(0)
    }

    fn rectangle(&self) -> Rectangle {
        Rectangle {
            left: self.left as _,
            top: self.top as _,
            right: self.right as _,
            bottom: self.bottom as _,
        }
    }
}

/// One face found in an image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectedFace {
    /// Where it is.
    pub bbox: FaceBox,
    /// The 128-d encoding.
    pub encoding: Vec<f32>,
    /// The detector that found it: HOG or CNN (never `Auto`).
    #[serde(default = "hog")]
    pub detector: Detector,
}

fn hog() -> Detector {
    Detector::Hog
}

/// The model files one set of options needs, each checked to exist.
struct ModelFiles {
    cnn_detector: Option<std::path::PathBuf>,
    landmarks: std::path::PathBuf,
    network: std::path::PathBuf,
}

impl ModelFiles {
    fn find(models: &ModelPaths, options: EncoderOptions) -> Result<ModelFiles> {
        Ok(ModelFiles {
            cnn_detector: match options.detector {
                Detector::Hog => None,
                Detector::Cnn | Detector::Auto => Some(models.cnn_detector()?),
            },
            landmarks: match options.landmarks {
                Landmarks::Five => models.landmarks_5()?,
                Landmarks::SixtyEight => models.landmarks_68()?,
            },
            network: models.encoder()?,
        })
    }
}

/// A loaded set of dlib models (one per thread).
pub struct Encoder {
    /// Loaded unless the detector is `Cnn`.
    hog: Option<FaceDetector>,
    /// Loaded unless the detector is `Hog`.
    cnn: Option<Box<FaceDetectorCnn>>,
    landmarks: LandmarkPredictor,
    network: FaceEncoderNetwork,
    options: EncoderOptions,
    /// Seconds in each dlib stage since the last [`Encoder::take_timings`] (an encoder is one
    /// thread's, so a `Cell` is enough).
    timings: Cell<StageSecs>,
}

impl Encoder {
    /// Loads the models `options` need from `models`.
    pub fn load(models: &ModelPaths, options: EncoderOptions) -> Result<Encoder> {
        let load_error = |what: &str, e: String| DatasetError::Models(format!("{what}: {e}"));
        let files = ModelFiles::find(models, options)?;
        let hog = (options.detector != Detector::Cnn).then(FaceDetector::new);
        let cnn = match files.cnn_detector {
            None => None,
            Some(path) => Some(Box::new(
                FaceDetectorCnn::open(path).map_err(|e| load_error("CNN detector", e))?,
            )),
        };
        let landmarks = LandmarkPredictor::open(files.landmarks)
            .map_err(|e| load_error("landmark predictor", e))?;
        let network = FaceEncoderNetwork::open(files.network)
            .map_err(|e| load_error("encoder network", e))?;
        Ok(Encoder {
            hog,
            cnn,
            landmarks,
            network,
            options,
            timings: Cell::new(StageSecs::default()),
        })
    }

    /// The seconds spent detecting, aligning and encoding since the last call, and starts again
    /// from zero.
    pub fn take_timings(&self) -> StageSecs {
        self.timings.take()
    }

    /// Runs `f`, adding its wall time to the stage `slot` picks.
    fn timed<T>(&self, slot: fn(&mut StageSecs) -> &mut f64, f: impl FnOnce() -> T) -> T {
        let mut timings = self.timings.get();
        let value = timed(slot(&mut timings), f);
        self.timings.set(timings);
        value
    }

    /// Checks that `models` holds every file `options` need, without loading any (seconds
    /// saved before a long job finds out a model is missing).
    pub fn check_models(models: &ModelPaths, options: EncoderOptions) -> Result<()> {
        ModelFiles::find(models, options).map(|_| ())
    }

    /// The options the encoder was loaded with.
    pub fn options(&self) -> EncoderOptions {
        self.options
    }

    /// Finds the faces in `image`, top to bottom as dlib reports them, and the detector that
    /// found them.
    pub fn detect(&self, image: &RgbImage) -> (Vec<FaceBox>, Detector) {
        self.detect_in(image, None)
    }

    /// [`Encoder::detect`], reusing `full` (the image already copied into dlib) when given.
    fn detect_in(&self, image: &RgbImage, full: Option<&ImageMatrix>) -> (Vec<FaceBox>, Detector) {
        let (width, height) = image.dimensions();
        // The scaling and upsampling are HOG's cost (the CNN's own time is taken apart below).
        let longest = width.max(height);
        let bound = self.options.max_detect_side.max(1);
        if longest <= bound {
            return match full {
                Some(m) => self.detect_at_full_size(m, image.dimensions()),
                None => self.detect_at_full_size(&matrix(image), image.dimensions()),
            };
        }
        let scale = f64::from(bound) / f64::from(longest);
        let small = self.timed(
            |t| &mut t.detect_hog,
            || {
                image::imageops::resize(
                    image,
                    ((f64::from(width) * scale).round() as u32).max(1),
                    ((f64::from(height) * scale).round() as u32).max(1),
                    image::imageops::FilterType::Triangle,
                )
            },
        );
        let back = |v: i64| (v as f64 / scale).round() as i64;
        let (boxes, by) = self.detect_at_full_size(&matrix(&small), small.dimensions());
        let boxes = boxes
            .into_iter()
            .map(|b| FaceBox {
                left: back(b.left),
                top: back(b.top),
                right: back(b.right),
                bottom: back(b.bottom),
            })
            .collect();
        (boxes, by)
    }

    /// Detection with face_recognition's upsampling: dlib's `pyramid_up` (bilinear) to the size
    /// `pyramid_down<2>::rect_up` gives, then `rect_down` on every box.
    ///
    /// HOG runs on the image upsampled `upsample` times. `Auto`'s CNN fallback runs on the most
    /// upsampled of those images whose longest side is at most [`CNN_FALLBACK_MAX_SIDE`]: its
    /// cost grows with the pixels, and a photo without a HOG face is often one without any face
    /// (it pays the whole scan for nothing), so small photos are upsampled for it and large ones
    /// are not. An explicit `Cnn` detector runs on the fully upsampled image, as asked.
    fn detect_at_full_size(
        &self,
        image: &ImageMatrix,
        (width, height): (u32, u32),
    ) -> (Vec<FaceBox>, Detector) {
        // level(k) is the image upsampled k times, sizes[k] its size.
        let mut upsampled: Vec<ImageMatrix> = Vec::new();
        let mut sizes = vec![(width as usize, height as usize)];
        for _ in 0..self.options.upsample {
            let (w, h) = *sizes.last().expect("the original size");
            let (up_w, up_h) = pyramid_up_size(w, h);
            let from = upsampled.last().unwrap_or(image);
            let up = self.timed(|t| &mut t.detect_hog, || from.resize(up_w, up_h));
            upsampled.push(up);
            sizes.push((up_w, up_h));
        }
        let level = |k: usize| if k == 0 { image } else { &upsampled[k - 1] };
        let top = sizes.len() - 1;
        let cnn_at = |cnn: &FaceDetectorCnn, k: usize| {
            let found = self.timed(
                |t| &mut t.detect_cnn,
                || cnn.face_locations(level(k)).to_vec(),
            );
            (found, k, Detector::Cnn)
        };
        let (found, at, by): (Vec<Rectangle>, usize, Detector) = match (&self.hog, &self.cnn) {
            (Some(hog), cnn) => {
                let found = self.timed(
                    |t| &mut t.detect_hog,
                    || hog.face_locations(level(top)).to_vec(),
                );
                match cnn {
                    // Auto: the CNN only where HOG found nothing.
                    Some(cnn) if found.is_empty() => {
                        let fits = |k: &usize| {
                            let (w, h) = sizes[*k];
                            w.max(h) <= CNN_FALLBACK_MAX_SIDE
                        };
                        cnn_at(cnn, (0..=top).rev().find(fits).unwrap_or(0))
                    }
                    _ => (found, top, Detector::Hog),
                }
            }
            (None, Some(cnn)) => cnn_at(cnn, top),
            (None, None) => (Vec::new(), top, Detector::Hog),
        };
        let boxes = found
            .iter()
            .map(|r| {
                let (mut l, mut t, mut rr, mut b) =
                    (r.left as f64, r.top as f64, r.right as f64, r.bottom as f64);
                for _ in 0..at {
                    // pyramid_down<2>::point_down: p / 2 − (1.25, 0.75)
                    (l, t, rr, b) = (
                        l / 2.0 - 1.25,
                        t / 2.0 - 0.75,
                        rr / 2.0 - 1.25,
                        b / 2.0 - 0.75,
                    );
                }
                // drectangle → rectangle rounds with floor(x + 0.5)
                let round = |v: f64| (v + 0.5).floor() as i64;
                FaceBox {
                    left: round(l),
                    top: round(t),
                    right: round(rr),
                    bottom: round(b),
                }
            })
            .collect();
        (boxes, by)
    }

    /// Encodes the faces at `boxes` in `image`. Boxes are clipped to the image first, as they are
    /// when face_recognition's `face_locations` feed its `face_encodings`.
    pub fn encode_at(&self, image: &RgbImage, boxes: &[FaceBox]) -> Vec<DetectedFace> {
        if boxes.is_empty() {
            return Vec::new();
        }
        let detector = match self.options.detector {
            Detector::Cnn => Detector::Cnn,
            _ => Detector::Hog,
        };
        self.encode_in(&matrix(image), image.dimensions(), boxes, detector)
    }

    /// Landmarks and encodings of `boxes` in `m`, a `width`×`height` image.
    fn encode_in(
        &self,
        m: &ImageMatrix,
        (width, height): (u32, u32),
        boxes: &[FaceBox],
        detector: Detector,
    ) -> Vec<DetectedFace> {
        let shapes: Vec<_> = self.timed(
            |t| &mut t.landmarks,
            || {
                boxes
                    .iter()
                    .map(|b| {
                        self.landmarks
                            .face_landmarks(m, &b.clipped(width, height).rectangle())
                    })
                    .collect()
            },
        );
        let encodings = self.timed(
            |t| &mut t.encode,
            || self.network.get_face_encodings(m, &shapes, 1),
        );
        boxes
            .iter()
            .zip(encodings.iter())
            .map(|(bbox, e)| DetectedFace {
                bbox: *bbox,
                // The network computes in float; the f64 it hands back converts exactly.
                encoding: e.as_ref().iter().map(|v| *v as f32).collect(),
                detector,
            })
            .collect()
    }

    /// Detects and encodes every face in `image`.
    pub fn encode(&self, image: &RgbImage) -> Vec<DetectedFace> {
        // One copy into dlib serves detection (at full size) and encoding.
        let full = matrix(image);
        let (boxes, by) = self.detect_in(image, Some(&full));
        if boxes.is_empty() {
            return Vec::new();
        }
        self.encode_in(&full, image.dimensions(), &boxes, by)
    }
}

unsafe extern "C" {
    /// OpenBLAS's own setter (dlib-face-recognition links OpenBLAS with its `openblas` feature).
    fn openblas_set_num_threads(threads: std::ffi::c_int);
}

/// Makes dlib's matrix products run on the calling thread only. OpenBLAS spreads each product over
/// every core by default, which is right for one photo at a time and wrong when several encoders
/// run side by side (a build's workers): they then fight over the same cores.
pub fn use_one_blas_thread() {
    // SAFETY: a plain setter of OpenBLAS's global thread count, callable at any time.
    unsafe { openblas_set_num_threads(1) }
}

/// Makes the process keep the memory it frees for its next allocation instead of handing it
/// back to the kernel. Call it before any thread starts, in a process that encodes photos.
///
/// dlib sizes its CNN's layer tensors (tens to hundreds of MB) and its image pyramids by the
/// photo, so every photo of a new size frees and allocates large blocks. glibc serves those with
/// `mmap` and returns them with `munmap`, and the kernel then zeroes every page again on first
/// touch: 40% of the CNN detector's time went to page faults (10.6 s of system time beside 17 s
/// of user time on 40 photos). One arena (blocks over 64 MB in a thread's own arena are always
/// mapped), no `mmap` threshold and no trimming make the blocks reused. Peak RSS stays the
/// largest photo's, but the process keeps it until it exits: right for a batch of photos, not
/// for a search, whose threads are better served by their own arenas.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: plain setters of glibc's allocator parameters; an out-of-range value is refused
    // (return 0), never undefined behaviour.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, libc::c_int::MAX);
        libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
    }
}

/// Copies an RGB image into dlib's matrix type.
fn matrix(image: &RgbImage) -> ImageMatrix {
    let (width, height) = image.dimensions();
    // SAFETY: an RgbImage holds exactly width × height × 3 bytes, which is what `new` reads.
    unsafe { ImageMatrix::new(width as usize, height as usize, image.as_raw().as_ptr()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upsampled_sizes_are_dlib_pyramid_ups() {
        // What dlib 19.24's own pyramid_up(img, out, pyramid_down<2>()) makes of these sizes
        // (printed by a C++ program against Debian's libdlib-dev). A size off by a pixel moves
        // HOG's borderline detections: 119 of 2,117 build-bench photos found other faces than
        // face_recognition when the size was (2w + 1) × (2h − 1).
        assert_eq!(pyramid_up_size(400, 300), (802, 601));
        assert_eq!(pyramid_up_size(1, 1), (4, 3));
        assert_eq!(pyramid_up_size(802, 601), (1606, 1203));
    }
}
