//! A [`Health`] with every counter set, for the tests that check each view shows every figure.

use crate::Health;

/// Every numeric field of [`Health`] set to its own non-zero value (`(i + 1) * 1_000_001`,
/// distinct after any view's rounding), found through serde so a new counter is set too.
pub fn health_with_every_figure() -> Health {
    let mut json = serde_json::to_value(Health::default()).expect("Health serializes");
    let fields = json.as_object_mut().expect("Health is an object");
    let mut i = 0u64;
    for v in fields.values_mut().filter(|v| v.is_u64()) {
        i += 1;
        *v = (i * 1_000_001).into();
    }
    serde_json::from_value(json).expect("Health reads back")
}
