//! Who may call: Basic users, OAuth clients, and the tokens
//! `/oauth_token.do` hands out.
//!
//! As on a real instance, a password-grant request made while the user's
//! access token for that client is still valid gets the *same* token back
//! (with the remaining lifetime), so `tokens_issued` counts distinct tokens
//! and `token_requests` counts calls to the endpoint.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// Who a request was authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No credentials needed: the simulator was built without users or
    /// OAuth clients.
    Anonymous,
    /// HTTP Basic, with this user name.
    Basic(String),
    /// An OAuth bearer token issued to this client, for this user (none for
    /// the client-credentials grant).
    Bearer {
        client: String,
        user: Option<String>,
    },
}

impl Caller {
    /// The name written into `sys_created_by` / `sys_updated_by`.
    pub fn user_name(&self) -> String {
        match self {
            Caller::Anonymous => "guest".to_string(),
            Caller::Basic(user) => user.clone(),
            Caller::Bearer {
                user: Some(user), ..
            } => user.clone(),
            Caller::Bearer { client, user: None } => client.clone(),
        }
    }
}

struct AccessToken {
    client: String,
    user: Option<String>,
    expires_at: Instant,
    revoked: bool,
}

struct RefreshToken {
    client: String,
    user: Option<String>,
    revoked: bool,
}

#[derive(Default)]
pub(crate) struct Auth {
    users: HashMap<String, String>,
    /// client_id → (client_secret, access token lifetime)
    clients: HashMap<String, (String, Duration)>,
    access: HashMap<String, AccessToken>,
    refresh: HashMap<String, RefreshToken>,
    pub token_requests: usize,
    pub tokens_issued: usize,
}

/// Why a request was refused.
pub(crate) struct Refused;

impl Auth {
    pub fn add_user(&mut self, user: &str, password: &str) {
        self.users.insert(user.to_string(), password.to_string());
    }

    pub fn add_client(&mut self, id: &str, secret: &str, lifetime: Duration) {
        self.clients
            .insert(id.to_string(), (secret.to_string(), lifetime));
    }

    fn open(&self) -> bool {
        self.users.is_empty() && self.clients.is_empty()
    }

    /// Checks an `Authorization` header.
    pub fn authenticate(&self, header: Option<&str>) -> Result<Caller, Refused> {
        let Some(header) = header else {
            return if self.open() {
                Ok(Caller::Anonymous)
            } else {
                Err(Refused)
            };
        };
        let (scheme, credentials) = header.split_once(' ').ok_or(Refused)?;
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(credentials.trim())
                .map_err(|_| Refused)?;
            let decoded = String::from_utf8(decoded).map_err(|_| Refused)?;
            let (user, password) = decoded.split_once(':').ok_or(Refused)?;
            return match self.users.get(user) {
                Some(expected) if expected == password => Ok(Caller::Basic(user.to_string())),
                _ => Err(Refused),
            };
        }
        if scheme.eq_ignore_ascii_case("bearer") {
            return match self.access.get(credentials.trim()) {
                Some(token) if !token.revoked && Instant::now() < token.expires_at => {
                    Ok(Caller::Bearer {
                        client: token.client.clone(),
                        user: token.user.clone(),
                    })
                }
                _ => Err(Refused),
            };
        }
        Err(Refused)
    }

    /// Answers a form posted to `/oauth_token.do`: the token JSON, or a
    /// refusal (which the instance answers with 401 `access_denied`).
    pub fn grant(&mut self, form: &HashMap<String, String>) -> Result<Value, Refused> {
        self.token_requests += 1;
        let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
        let client = field("client_id").to_string();
        let lifetime = match self.clients.get(&client) {
            Some((secret, lifetime)) if secret == field("client_secret") => *lifetime,
            _ => return Err(Refused),
        };
        let (user, refresh) = match field("grant_type") {
            "password" => {
                let user = field("username");
                match self.users.get(user) {
                    Some(password) if password == field("password") => {
                        (Some(user.to_string()), true)
                    }
                    _ => return Err(Refused),
                }
            }
            "client_credentials" => (None, false),
            "refresh_token" => match self.refresh.get(field("refresh_token")) {
                Some(token) if !token.revoked && token.client == client => {
                    (token.user.clone(), true)
                }
                _ => return Err(Refused),
            },
            _ => return Err(Refused),
        };
        let (access_token, expires_in) = self.current_or_new_access(&client, &user, lifetime);
        let mut answer = json!({
            "access_token": access_token,
            "scope": "useraccount",
            "token_type": "Bearer",
            "expires_in": expires_in,
        });
        if refresh {
            let refresh_token = match field("grant_type") {
                "refresh_token" => field("refresh_token").to_string(),
                _ => self.refresh_token_for(&client, &user),
            };
            answer["refresh_token"] = Value::String(refresh_token);
        }
        Ok(answer)
    }

    /// The caller's still-valid access token, or a new one; and its
    /// remaining lifetime in whole seconds (at least 1).
    fn current_or_new_access(
        &mut self,
        client: &str,
        user: &Option<String>,
        lifetime: Duration,
    ) -> (String, u64) {
        let now = Instant::now();
        let current = self.access.iter().find(|(_, t)| {
            !t.revoked && t.expires_at > now && t.client == client && &t.user == user
        });
        if let Some((token, t)) = current {
            return (token.clone(), (t.expires_at - now).as_secs().max(1));
        }
        let token = new_token();
        self.access.insert(
            token.clone(),
            AccessToken {
                client: client.to_string(),
                user: user.clone(),
                expires_at: now + lifetime,
                revoked: false,
            },
        );
        self.tokens_issued += 1;
        (token, lifetime.as_secs().max(1))
    }

    fn refresh_token_for(&mut self, client: &str, user: &Option<String>) -> String {
        let current = self
            .refresh
            .iter()
            .find(|(_, t)| !t.revoked && t.client == client && &t.user == user);
        if let Some((token, _)) = current {
            return token.clone();
        }
        let token = new_token();
        self.refresh.insert(
            token.clone(),
            RefreshToken {
                client: client.to_string(),
                user: user.clone(),
                revoked: false,
            },
        );
        token
    }

    /// Makes every access token issued so far invalid (as if expired).
    pub fn expire_access_tokens(&mut self) {
        self.access.values_mut().for_each(|t| t.revoked = true);
    }

    /// Makes every refresh token issued so far invalid too.
    pub fn revoke_refresh_tokens(&mut self) {
        self.refresh.values_mut().for_each(|t| t.revoked = true);
    }
}

fn new_token() -> String {
    let bytes: [u8; 48] = std::array::from_fn(|_| rand::random::<u8>());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
