//! The generator: [`template`] renders the root into `template/` (the
//! cargo-generate template), [`new`] generates a project from it, and
//! [`matrix`] tests the generator by generating every option combination
//! and running each project's own CI. Only this repository has it: a
//! generated project's xtask has none of it.

pub(crate) mod matrix;
pub(crate) mod new;
pub(crate) mod template;
