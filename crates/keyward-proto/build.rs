//! Compiles the repository's `proto/` with protox (no system `protoc`
//! needed) and writes the file descriptor set that server reflection serves.

use std::{env, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let proto_root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", proto_root.display());

    let descriptors = protox::compile(["keyward/v1/keyward.proto"], [&proto_root])?;
    fs::write(
        out_dir.join("keyward_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    // The messages and the client, for everyone.
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        // Undecodable requests are INVALID_ARGUMENT, not INTERNAL.
        .codec_path("crate::codec::ProtoCodec")
        .compile_fds(descriptors.clone())?;
    // The server trait alone, over the messages above, except that
    // Authenticate answers with `AuthenticateReply`: the same bytes on the
    // wire, with the key's unchanging part encoded once per cached key
    // (see `authenticate_reply.rs`). Clients keep the plain message.
    let server_dir = out_dir.join("server");
    fs::create_dir_all(&server_dir)?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .codec_path("crate::codec::ProtoCodec")
        .extern_path(".keyward.v1", "crate::keyward::v1")
        .extern_path(
            ".keyward.v1.AuthenticateResponse",
            "crate::authenticate_reply::AuthenticateReply",
        )
        .out_dir(&server_dir)
        .compile_fds(descriptors)?;
    Ok(())
}
