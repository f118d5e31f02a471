//! Every WGSL file parses and validates with naga using only the capabilities vqgrad needs, and translates to
//! SPIR-V (Vulkan), MSL (Metal), HLSL (DX12) and GLSL ES 3.10 compute (GL), entry point by entry point, so that
//! "any Vulkan, Metal or DX12 GPU" is checked on every run, without a GPU. The first three go through
//! `vqgrad::shaders::translate` (what `vqgrad export-shaders` writes); each SPIR-V module is read back by naga's
//! SPIR-V front end and validated again.

use naga::back::glsl;
use naga::valid::{Capabilities, ValidationFlags, Validator};
use std::collections::HashMap;
use vqgrad::shaders::translate::{self, Target};
use vqgrad::shaders::{self, Lanes};

/// The entry points each file must have: a renamed or dropped kernel fails here.
const ENTRY_POINTS: &[(&str, &[&str])] = &[
    ("assign.wgsl", &["assign"]),
    ("estimator.wgsl", &["estimator_backward"]),
    ("soft.wgsl", &["soft_sample", "soft_forward", "soft_backward"]),
    ("schedule.wgsl", &["adapt_beta"]),
    ("learned.wgsl", &["learned_backward", "learned_grad"]),
    ("residual.wgsl", &["subtract", "accumulate"]),
    ("orthogonal.wgsl", &["orthogonal_grad"]),
    ("affine.wgsl", &["affine_grad", "affine_apply"]),
    ("sgd.wgsl", &["sgd_momentum"]),
    ("latent.wgsl", &["fsq_forward", "fsq_backward", "unit_forward", "unit_backward"]),
    (
        "codebook.wgsl",
        &[
            "clear_counts",
            "count_codes",
            "segment_sums",
            "segment_sums_small",
            "ema_sizes",
            "ema_codebook",
            "lloyd_update",
            "mark_used",
            "reset_dead",
        ],
    ),
    ("stats.wgsl", &["clear_label_counts", "count_labels", "summarize"]),
    ("dense.wgsl", &["matmul", "column_sums", "relu_mask"]),
    ("loss.wgsl", &["rec_grad", "sum_sq_diff", "sum"]),
    ("adam.wgsl", &["adam"]),
    ("gather.wgsl", &["gather_rows", "gather_codes"]),
];

fn parse_and_validate(name: &str, src: &str) -> (naga::Module, naga::valid::ModuleInfo) {
    translate::validate(name, src).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn shaders_dir_matches_the_constants() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .expect("shaders/ exists")
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".wgsl"))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = shaders::ALL.iter().map(|(n, _)| n.to_string()).collect();
    listed.push("common.wgsl".into());
    listed.sort();
    assert_eq!(on_disk, listed, "every file in shaders/ must be in vqgrad::shaders::ALL (or be common.wgsl)");
    assert_eq!(std::fs::read_to_string(dir.join("common.wgsl")).unwrap(), shaders::COMMON);
    for (name, src) in shaders::ALL {
        let file = std::fs::read_to_string(dir.join(name)).unwrap();
        // Each constant is its file, with the shared source in front where the file uses it.
        let composed = format!("{}{file}", shaders::COMMON);
        assert!(*src == file || *src == composed, "{name}: the constant is neither the file nor common + file");
        // Shared WGSL has one source: no kernel file declares what common.wgsl does.
        for shared in ["struct Step ", "fn mix32("] {
            assert!(!file.contains(shared), "{name} declares `{shared}` again; it lives in common.wgsl");
        }
    }
}

#[test]
fn scalar_variants_differ_only_in_the_variant_block() {
    for (scalar, vec4, file) in [
        (shaders::assign_source(Lanes::Scalar), shaders::assign_source(Lanes::Vec4), shaders::ASSIGN),
        (shaders::gather_source(Lanes::Scalar), shaders::gather_source(Lanes::Vec4), shaders::GATHER),
    ] {
        assert!(scalar.contains("alias Row = f32;"));
        assert!(!scalar.contains("vec4<f32>"), "the scalar variant must not load vec4");
        assert_eq!(vec4, file);
        let after = |s: &str| s[s.find("// VARIANT END").unwrap()..].to_string();
        assert_eq!(after(&scalar), after(file), "only the variant block may differ");
    }
    assert_eq!(Lanes::for_dim(8), Lanes::Vec4);
    assert_eq!(Lanes::for_dim(6), Lanes::Scalar);
}

#[test]
fn every_shader_validates_and_translates_to_every_backend() {
    let entry_points: HashMap<&str, &[&str]> = ENTRY_POINTS.iter().copied().collect();
    let mut translated = 0;
    for (name, src) in shaders::variants() {
        let (module, info) = parse_and_validate(&name, &src);
        let file = name.replace(".scalar", "");
        let expected = entry_points.get(file.as_str()).unwrap_or_else(|| panic!("{file}: no expected entry points"));
        let found: Vec<&str> = module.entry_points.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(&found, expected, "{name}: entry points");
        let each = |target| -> Vec<(String, Vec<u8>)> {
            let out = translate::entry_points(&name, &src, target).unwrap_or_else(|e| panic!("{e}"));
            let names: Vec<&str> = out.iter().map(|(ep, _)| ep.as_str()).collect();
            assert_eq!(&names, expected, "{name}: {target:?} entry points");
            out
        };
        for (ep, bytes) in each(Target::SpirV) {
            let ctx = format!("{name}::{ep}: SPIR-V");
            assert_eq!(bytes[..4], 0x0723_0203u32.to_le_bytes(), "{ctx}: no magic number");
            let back = naga::front::spv::parse_u8_slice(&bytes, &Default::default())
                .unwrap_or_else(|e| panic!("{ctx} does not read back: {e}"));
            Validator::new(ValidationFlags::all(), Capabilities::empty())
                .validate(&back)
                .unwrap_or_else(|e| panic!("{ctx} read back does not validate: {e}"));
            assert_eq!(back.entry_points.len(), 1, "{ctx}: one entry point per module");
        }
        for (ep, bytes) in each(Target::Msl) {
            let text = String::from_utf8(bytes).unwrap();
            assert!(text.contains("kernel void"), "{name}::{ep}: MSL has no kernel");
            // Real buffer slots that a Metal program can bind, never naga's placeholders.
            assert!(text.contains("[[buffer(0)]]") && !text.contains("fake"), "{name}::{ep}: MSL bindings");
        }
        for (ep, bytes) in each(Target::Hlsl) {
            assert!(String::from_utf8(bytes).unwrap().contains("[numthreads("), "{name}::{ep}: HLSL has no kernel");
        }
        for ep in &module.entry_points {
            // GLSL ES 3.10 compute (GL), checked here only: the GL backend is not a target of export-shaders.
            let stage_ep = Some((ep.stage, ep.name.as_str()));
            let (module, info) =
                naga::back::pipeline_constants::process_overrides(&module, &info, stage_ep, &Default::default())
                    .unwrap_or_else(|e| panic!("{name}::{}: overrides: {e}", ep.name));
            let glsl_pipe =
                glsl::PipelineOptions { shader_stage: ep.stage, entry_point: ep.name.clone(), multiview: None };
            let mut glsl_src = String::new();
            glsl::Writer::new(&mut glsl_src, &module, &info, &glsl::Options::default(), &glsl_pipe, Default::default())
                .and_then(|mut w| w.write())
                .unwrap_or_else(|e| panic!("{name}::{}: GLSL ES: {e}", ep.name));
            assert!(glsl_src.contains("layout(local_size_x"), "{name}::{}: GLSL has no compute layout", ep.name);
            translated += 1;
        }
    }
    assert_eq!(translated, 42, "entry points translated");
}

#[test]
fn a_broken_shader_is_caught() {
    // The check above must be able to fail: a type error does not validate.
    let broken = shaders::ESTIMATOR.replace("let m = params.m;", "let m = params.m + 1.0;");
    let module = naga::front::wgsl::parse_str(&broken);
    let caught = match module {
        Err(_) => true,
        Ok(module) => Validator::new(ValidationFlags::all(), Capabilities::empty()).validate(&module).is_err(),
    };
    assert!(caught, "a u32 + f32 shader slipped through");
}
