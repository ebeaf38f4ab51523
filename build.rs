//! Turns `openapi.yaml`, the API's contract, into the JSON that `GET /openapi.json` serves.
//! Doing it here means a document that does not parse stops the build, not a request.

use std::{env, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=openapi.yaml");
    let yaml = fs::read_to_string("openapi.yaml")?;
    let document: serde_json::Value =
        yaml_serde::from_str(&yaml).map_err(|e| format!("openapi.yaml: {e}"))?;
    let out = PathBuf::from(env::var("OUT_DIR")?).join("openapi.json");
    fs::write(out, serde_json::to_vec(&document)?)?;
    Ok(())
}
