//! Differential test against real Debezium 3.6.3: `tests/fixtures/debezium-oracle.txt` holds
//! payloads (random and edge cases, canonicalised by PostgreSQL's jsonb) each followed by the
//! body Debezium's own code produced for it (see `tests/fixtures/README.md`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use wire_format::{WireFormat, encode};

#[test]
fn bodies_match_debezium_for_every_oracle_payload() {
    let path = format!(
        "{}/tests/fixtures/debezium-oracle.txt",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len().is_multiple_of(2));
    let mut mismatches = Vec::new();
    for pair in lines.chunks(2) {
        let (payload, expected) = (pair[0], pair[1]);
        let message = encode(WireFormat::Debezium, payload, &[]).unwrap();
        let body = String::from_utf8(message.body).unwrap();
        if body != expected {
            mismatches.push(format!(
                "payload  {payload}\nexpected {expected}\nactual   {body}\n"
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} differ:\n{}",
        mismatches.len(),
        lines.len() / 2,
        mismatches.iter().take(8).cloned().collect::<String>()
    );
    assert!(lines.len() / 2 >= 1000);
}
