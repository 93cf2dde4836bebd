//! From photos to face encodings (ARCHITECTURE.md: Face pipeline): decoding images safely ([`decode`]), finding
//! dlib's model files ([`models`]), and detecting, aligning and encoding faces ([`encoder`]), and
//! a whole photo from bytes to faces ([`photo`]), and where the time goes ([`timings`]).

pub mod decode;
pub mod encoder;
pub mod models;
pub mod photo;
pub mod timings;

pub use decode::{DecodeLimits, decode_image};
pub use encoder::{
    DetectedFace, Detector, Encoder, EncoderOptions, FaceBox, Landmarks, keep_freed_memory,
    use_one_blas_thread,
};
pub use models::ModelPaths;
pub use photo::{EncodedPhoto, encode_photo, index_of_largest};
pub use timings::StageSecs;
