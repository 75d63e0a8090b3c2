//! Identifiers and secrets the hub mints.

use rand::RngCore;

/// A job id: `job-` + 11 hex digits of the submission time in milliseconds + 8 random hex digits.
/// Ids sort by submission time, so lists page by id alone.
pub fn job_id() -> String {
    format!(
        "job-{:011x}{:08x}",
        crate::store::now_ms(),
        rand::rng().next_u32()
    )
}

/// An assignment id: the job id, attempt and rank, so logs read without a lookup.
pub fn assignment_id(job_id: &str, attempt: u32, rank: u32) -> String {
    let job = job_id.strip_prefix("job-").unwrap_or(job_id);
    format!("asg-{job}-{attempt}-{rank}")
}

/// A 256-bit random secret as hex, with a prefix saying what it is (`agora_` API keys, `agt_` node
/// tokens), so a leaked secret is recognisable.
pub fn secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_sort_by_submission_time() {
        let a = job_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = job_id();
        assert!(a < b, "{a} should sort before {b}");
        assert_eq!(a.len(), "job-".len() + 19);
    }

    #[test]
    fn secrets_are_unique_and_prefixed() {
        let (a, b) = (secret("agora_"), secret("agora_"));
        assert_ne!(a, b);
        assert!(a.starts_with("agora_") && a.len() == 6 + 64);
    }
}
