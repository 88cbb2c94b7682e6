//! The integration tests' shared support, compiled once in fedgate-dev
//! ([`fedgate_dev::testing`]) rather than into every test binary.

pub use fedgate_dev::testing::*;
