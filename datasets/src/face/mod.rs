//! From photos to face encodings (SPEC section 5): decoding images safely ([`decode`]), finding
//! dlib's model files ([`models`]), and detecting, aligning and encoding faces ([`encoder`]).

pub mod decode;
pub mod encoder;
pub mod models;

pub use decode::{DecodeLimits, decode_image};
pub use encoder::{DetectedFace, Detector, Encoder, EncoderOptions, FaceBox, Landmarks};
pub use models::ModelPaths;
