//! Facts about GPU models that the agent and the hub both need: the dense FP32 peak each model's
//! datasheet gives, against which a node's measured matmul benchmark is judged (the agent's health
//! finding, the hub's benchmark-honesty rule in docs/verification.md).

/// Dense FP32 peak (CUDA cores, no tensor cores, boost clock) in TFLOPS of the model named `name`
/// as Agora writes models (`H100-80GB`, ASCII case ignored), from NVIDIA's product datasheets;
/// where a name covers several forms (SXM and PCIe) the lowest, so that a slower form is never
/// taken for a faulty or mislabelled one. `None` for a model not in the table.
pub fn fp32_peak_tflops(name: &str) -> Option<f64> {
    let name = name.to_ascii_uppercase();
    let peak = match name.as_str() {
        // HGX B200 datasheet: 600 TFLOPS FP32 for eight GPUs.
        "B200-180GB" => 75.0,
        // H200 datasheet: SXM 67, NVL (PCIe) 60.
        "H200-141GB" => 60.0,
        // H100 datasheet: SXM 67, PCIe 51.
        "H100-80GB" => 51.0,
        // A100 datasheet: 19.5 for both memory sizes and forms.
        "A100-80GB" | "A100-40GB" => 19.5,
        // L40S datasheet.
        "L40S-48GB" => 91.6,
        // L40 datasheet.
        "L40-48GB" => 90.5,
        // L4 datasheet.
        "L4-24GB" => 30.3,
        // A40 datasheet.
        "A40-48GB" => 37.4,
        // A30 datasheet.
        "A30-24GB" => 10.3,
        // A10 datasheet.
        "A10-24GB" => 31.2,
        // GeForce RTX 5090 specifications (shader TFLOPS).
        "RTX5090-32GB" => 104.8,
        // Ada Lovelace architecture whitepaper, RTX 4090.
        "RTX4090-24GB" => 82.6,
        // Ampere GA102 whitepaper, RTX 3090.
        "RTX3090-24GB" => 35.6,
        // V100 datasheet: SXM2 15.7, PCIe 14.
        "V100-32GB" | "V100-16GB" => 14.0,
        // T4 datasheet.
        "T4-16GB" => 8.1,
        // A model added to the table without a peak: no finding can be made against it, and
        // the benchmark test that walks the table fails until one is added.
        _ => return None,
    };
    Some(peak)
}

#[cfg(test)]
mod tests {
    #[test]
    fn peaks_are_found_by_name_in_any_case() {
        assert_eq!(super::fp32_peak_tflops("H100-80GB"), Some(51.0));
        assert_eq!(super::fp32_peak_tflops("h100-80gb"), Some(51.0));
        assert_eq!(super::fp32_peak_tflops("Z9-1GB"), None);
    }
}
