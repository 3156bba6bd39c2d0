//! Compiles `proto/onnx.proto` (copied from the `onnx` 1.23.2 wheel) into prost types with the
//! pure-Rust `protox` compiler, so no `protoc` is needed.

fn main() {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    println!("cargo:rerun-if-changed=build.rs");
    let fds = protox::compile(["proto/onnx.proto"], ["proto"])
        .unwrap_or_else(|e| panic!("protox could not compile proto/onnx.proto: {e}"));
    prost_build::Config::new()
        .compile_fds(fds)
        .unwrap_or_else(|e| panic!("prost-build could not generate the ONNX types: {e}"));
}
