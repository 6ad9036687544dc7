//! Plugin discovery, checks and validation.
