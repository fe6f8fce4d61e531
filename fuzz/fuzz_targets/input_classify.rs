//! `input::classify` on arbitrary bytes agrees exactly with the README's
//! rule (`spec_classify`): spaces and dashes dropped, only ASCII digits,
//! 6–16 digits, over 64 bytes `Malformed`; `totp()` gives 6–8 digits only.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pam_twofactor::login::input::{self, Answer};
use pam_twofactor_fuzz::{Spec, spec_classify};

fuzz_target!(|data: &[u8]| {
    let got = input::classify(data);
    let want = spec_classify(data);
    match (&got, &want) {
        (Answer::Digits(code), Spec::Digits(digits)) => {
            assert_eq!(code.as_str(), digits.as_str());
            assert!(code.bytes().all(|b| b.is_ascii_digit()));
        }
        (Answer::Empty, Spec::Empty) | (Answer::Malformed, Spec::Malformed) => {}
        _ => panic!("classify({data:?}) = {got:?}, the README says {want:?}"),
    }
    match got.totp() {
        Some(code) => {
            assert!((6..=8).contains(&code.len()), "{code:?}");
            assert!(code.bytes().all(|b| b.is_ascii_digit()), "{code:?}");
        }
        None => assert!(!matches!(&want, Spec::Digits(d) if (6..=8).contains(&d.len()))),
    }
    if data.len() > input::MAX_INPUT {
        assert_eq!(got, Answer::Malformed);
    }
});
