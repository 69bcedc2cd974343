//! SMTP AUTH in the probe: the mechanisms a relay offers after STARTTLS and the one a
//! delivery would log in with (`session::auth_mechanism`, the delivery's own choice), or why
//! it could not. The probe never sends credentials (only `--send` delivers, through the real
//! path); it shows the user name and never the password nor anything derived from it.

use qremote::ehlo::Caps;
use qremote::report::outsafe;
use qremote::session::{self, Probe};

use crate::json::Json;

/// What AUTH looks like on one connection: the mechanisms offered (after STARTTLS if TLS
/// came up) and, with credentials, the mechanism chosen or why none.
pub struct AuthView {
    pub offered: Option<Vec<String>>,
    pub chosen: Option<Result<&'static str, String>>,
}

pub fn view(p: &Probe, user: Option<&str>) -> AuthView {
    // The EHLO a delivery authenticates after: the last one (after STARTTLS when TLS is up).
    let caps = p.ehlo.last().map(Caps::parse);
    let offered = caps
        .as_ref()
        .and_then(|c| c.auth.as_ref())
        .map(|m| m.iter().map(|m| outsafe(m)).collect());
    let chosen = user.map(|_| match &caps {
        Some(c) => session::auth_mechanism(c, p.session.is_some()).map(|m| m.name()),
        None => Err("the session ended before EHLO".into()),
    });
    AuthView { offered, chosen }
}

pub fn text(v: &AuthView, user: Option<&str>) -> Vec<String> {
    let (Some(u), Some(chosen)) = (user, &v.chosen) else {
        // Without credentials AUTH plays no part: only say what the server offers.
        return v
            .offered
            .iter()
            .map(|m| {
                format!(
                    "AUTH offered: {} (no credentials for this route: a delivery does not log in)",
                    m.join(" ")
                )
            })
            .collect();
    };
    let offered = match &v.offered {
        Some(m) if m.is_empty() => "AUTH offered with no mechanisms".to_string(),
        Some(m) => format!("AUTH offered: {}", m.join(" ")),
        None => "AUTH not offered".to_string(),
    };
    let outcome = match chosen {
        Ok(m) => format!(
            "AUTH: a delivery would authenticate as {u} with {m} (the probe sends no \
             credentials: only --send shows whether the password is accepted)"
        ),
        Err(why) => format!("AUTH: a delivery could not authenticate as {u}: {why}"),
    };
    vec![offered, outcome]
}

pub fn json(v: &AuthView) -> Json {
    let (chosen, error) = match &v.chosen {
        Some(Ok(m)) => (Some(*m), None),
        Some(Err(why)) => (None, Some(why.clone())),
        None => (None, None),
    };
    Json::Obj(vec![
        (
            "offered",
            v.offered.as_ref().map_or(Json::Null, |m| {
                Json::Arr(m.iter().map(|s| Json::str(s.clone())).collect())
            }),
        ),
        ("credentials", Json::Bool(v.chosen.is_some())),
        ("mechanism", Json::opt_str(chosen)),
        ("error", Json::opt_str(error)),
    ])
}
