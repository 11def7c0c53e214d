//! Writes, for every architecture at a small width ([`reference_models`]), our initial
//! weights, the weights after two training passes (safetensors, PyTorch names) and the
//! inputs and logits, so that `reference/models.py check DIR` can load them into the PyTorch
//! definitions with `strict=True`, replay the passes and compare outputs and buffers.
//!
//! `cargo run -p breakeven-models --example export_reference -- DIR`
//!
//! [`reference_models`]: breakeven_models::reference::reference_models

use std::collections::HashMap;
use std::path::PathBuf;

use breakeven_models::{io, reference};
use candle_core::Tensor;

fn main() -> anyhow::Result<()> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "reference-out".into()),
    );
    std::fs::create_dir_all(&dir)?;
    for (name, spec) in reference::reference_models() {
        let model = reference::model(&spec)?;
        io::save(
            model.as_ref(),
            &dir.join(format!("{name}.init.safetensors")),
        )?;
        let x = reference::input()?;
        let (train, eval) = reference::run(model.as_ref(), &x)?;
        io::save(model.as_ref(), &dir.join(format!("{name}.safetensors")))?;
        let fixture: HashMap<String, Tensor> = [
            ("x".to_string(), x),
            ("train_logits".to_string(), train),
            ("eval_logits".to_string(), eval),
        ]
        .into();
        candle_core::safetensors::save(&fixture, dir.join(format!("{name}.fixture.safetensors")))?;
        std::fs::write(
            dir.join(format!("{name}.json")),
            serde_json::to_string(&spec)?,
        )?;
        println!("{name}: {} tensors", io::state_dict(model.as_ref()).len());
    }
    Ok(())
}
