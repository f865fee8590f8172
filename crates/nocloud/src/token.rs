//! The k3s cluster token: read from `token_file`, or created there (0600) with 32 random bytes.
//! It is an input, so randomness is fine here; it is never printed.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::Error;

/// A cluster token. `Debug` and `Display` are redacted; use [`Token::expose`] to get the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// Wrap a known token (tests, callers that manage secrets themselves).
    pub fn new(secret: impl Into<String>) -> Self {
        Token(secret.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Read the token at `path` (surrounding whitespace trimmed); if the file does not exist,
    /// create it (and missing parent directories, 0700) with mode 0600 and a fresh random token.
    pub fn load_or_create(path: &Path) -> Result<Token, Error> {
        match fs::read_to_string(path) {
            Ok(s) => {
                let t = s.trim();
                if t.is_empty() {
                    return Err(Error::EmptyToken {
                        path: path.to_owned(),
                    });
                }
                Ok(Token(t.to_owned()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::create(path),
            Err(source) => Err(Error::ReadToken {
                path: path.to_owned(),
                source,
            }),
        }
    }

    fn create(path: &Path) -> Result<Token, Error> {
        let err = |source| Error::CreateToken {
            path: path.to_owned(),
            source,
        };
        let mut raw = [0u8; 32];
        fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut raw))
            .map_err(err)?;
        let token = crate::render::hex(&raw);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.exists()
        {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(err)?;
        }
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(err)?;
        // The umask cannot widen 0600, but make it exact regardless.
        f.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(err)?;
        f.write_all(token.as_bytes())
            .and_then(|()| f.write_all(b"\n"))
            .map_err(err)?;
        f.sync_all().map_err(err)?;
        Ok(Token(token))
    }
}

use std::os::unix::fs::DirBuilderExt;
