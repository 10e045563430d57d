fn main() -> Result<(), Box<dyn std::error::Error>> {
    // protoc comes from a crate, so no system package is needed.
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("echolog_descriptor.bin"))
        // Encoded straight from the engine's records (src/event_batch.rs).
        .extern_path(".echolog.v1.EventBatch", "crate::event_batch::EventBatch")
        // A received payload is a slice of the message's buffer, not a copy.
        .bytes(".echolog.v1.Event.payload")
        .compile_protos(&["proto/echolog/v1/echolog.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/echolog/v1/echolog.proto");
    Ok(())
}
