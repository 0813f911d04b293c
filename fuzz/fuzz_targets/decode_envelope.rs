//! Any bytes given to `wire::decode` must give a message or an error, never a
//! panic, and a message that decodes must survive encode then decode
//! unchanged, with a re-encoding no longer than the input.

#![no_main]

use bramble_common::wire;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|payload: &[u8]| {
    let Ok(message) = wire::decode(payload) else {
        return;
    };
    let encoded = match wire::encode(&message) {
        Ok(encoded) => encoded,
        Err(error) => panic!("a decoded {} message does not re-encode: {error}", message.kind()),
    };
    assert!(
        encoded.len() <= payload.len(),
        "re-encoding grew from {} to {} bytes",
        payload.len(),
        encoded.len()
    );
    assert_eq!(wire::decode(&encoded).as_ref(), Ok(&message));
});
