//! pie-ls library.
