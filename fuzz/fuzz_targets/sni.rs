//! Arbitrary bytes as the first bytes of a CONNECT tunnel through the
//! ClientHello parser: it never panics, it decides the same way however
//! the bytes are split (a prefix is never `Complete` with another name or
//! an error where the whole is fine), and a name it returns is a plain
//! lower-case host name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_fuzz::sni::{parse, Progress};

fuzz_target!(|data: &[u8]| {
    let whole = parse(data);
    if let Ok(Progress::Complete(hello)) = &whole {
        if let Some(name) = &hello.server_name {
            assert!(!name.is_empty() && !name.ends_with('.'), "{name:?}");
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || b == b'-'
                    || b == b'_'
                    || b == b'.'),
                "{name:?}"
            );
        }
        // Every shorter prefix is either still incomplete or the same answer.
        for cut in [data.len() / 3, data.len() / 2, data.len().saturating_sub(1)] {
            match parse(&data[..cut]) {
                Ok(Progress::NeedMore) => {}
                Ok(Progress::Complete(h)) => assert_eq!(&h, hello, "prefix {cut} decided differently"),
                Err(e) => panic!("prefix {cut} of a valid hello was refused: {e}"),
            }
        }
    }
});
