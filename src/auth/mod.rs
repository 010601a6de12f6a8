//! Authentication: token keys, the Bearer check and its cache, credentials, and the SPEC §1
//! endpoints.

pub mod bearer;
pub mod cache;
pub mod credentials;
pub mod endpoints;
pub mod es256;
pub mod jwt;
pub mod keys;
pub mod lenient_json;
mod login;
pub mod refresh;
mod renew;
pub mod sessions;
pub mod tokens;

pub use tokens::{Authenticated, Identity};
