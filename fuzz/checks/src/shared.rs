//! The shared tier's object records as read from Redis (`HGETALL vc:{ID}:o`).
use std::collections::HashMap;

use velocache::cache::shared::tier::TierObject;

/// The `shared_record` check: the input is a record, fields and values separated by NUL bytes
/// (`name\0value\0name\0value…`). Any record parses to an object or an error, never a panic;
/// a parsed object only lists slices inside its body, and is complete exactly when it lists
/// all of them.
pub fn shared_record(data: &[u8]) {
    let mut parts = data.split(|b| *b == 0);
    let mut fields = HashMap::new();
    while let (Some(name), Some(value)) = (parts.next(), parts.next()) {
        fields.insert(String::from_utf8_lossy(name).into_owned(), value.to_vec());
    }
    let Ok(obj) = TierObject::parse(fields) else {
        return;
    };
    match obj.meta.slices() {
        Some(n) => {
            assert!(
                obj.digests.keys().all(|i| *i < n),
                "a slice beyond the body of {n} slices"
            );
            assert_eq!(obj.complete(), obj.digests.len() as u64 == n);
        }
        None => assert!(!obj.complete(), "complete without a body length"),
    }
}
