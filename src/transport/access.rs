//! Who may read the administration endpoints (`/metrics`, longweb's `/state`): the networks of
//! `[admin] allow`, by the peer address of the connection.

use actix_web::HttpRequest;

/// The networks allowed to read administration endpoints.
#[derive(Debug, Clone, Default)]
pub struct AdminAccess {
    allow: Vec<ipnet::IpNet>,
}

impl AdminAccess {
    pub fn new(allow: Vec<ipnet::IpNet>) -> AdminAccess {
        AdminAccess { allow }
    }

    /// Whether the request comes from an allowed address.
    pub fn allows(&self, req: &HttpRequest) -> bool {
        req.peer_addr().is_some_and(|a| self.allow.iter().any(|n| n.contains(&a.ip())))
    }
}
