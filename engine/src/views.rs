#[path = "views/histogram.rs"] mod histogram; pub use histogram::X;
