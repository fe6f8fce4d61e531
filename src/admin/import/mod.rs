//! Reading the files of the modules we replace, for `twofactor import`:
//! google-authenticator's `~/.google_authenticator` and pam_oath's users
//! file. Pure parsing; the CLI decides what to store. Formats as documented
//! by those projects (google-authenticator-libpam's README and FILEFORMAT;
//! pam_oath's usersfile description in oath-toolkit's manual).

mod google_authenticator;
mod oath;

pub use google_authenticator::{GoogleAuthenticator, ImportError, parse_google_authenticator};
pub use oath::{OathFile, OathUser, parse_oath_usersfile};

/// The smallest secret we import: google-authenticator's default is 80 bits.
pub const MIN_IMPORT_BITS: usize = 80;
