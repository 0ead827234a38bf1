//! Everything that speaks Zenlayer's Cloud API: the request signature, the
//! upstream client, and the shape of Zenlayer's answers.

pub mod signing;
