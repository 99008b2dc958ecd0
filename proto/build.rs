// Compiles herd.proto (messages and both gRPC services) with the vendored protoc, so no system
// protobuf compiler is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_with_config(config, &["herd.proto"], &["."])?;
    println!("cargo:rerun-if-changed=herd.proto");
    Ok(())
}
