//! YAML as MCollective's `ssl` plugin reads and writes it with Psych 4: `safe_load` with
//! Symbol allowed and aliases refused, YAML 1.1 scalars, and Psych's own dump layout.
//!
//! Parsing uses yaml-rust2's event parser, which reports each scalar's style, so a plain
//! `:agent` is a Symbol and a quoted `':agent'` a String, exactly as Psych decides. Writing
//! follows Psych's `visit_String` choices (plain, quoted, `|` literal) and its block layout, so a
//! captured message decodes and encodes back to the same bytes.

mod plain;
mod quote;
mod read;
#[cfg(test)]
mod tests;
mod write;

pub use read::decode;
pub use write::encode;

/// Most nesting of sequences and mappings.
pub const MAX_DEPTH: usize = 32;
/// Most values in one document.
pub const MAX_VALUES: usize = 100_000;
