//! Fixed release shapes.
