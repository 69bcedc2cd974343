//! DNS stub resolver (placeholder; being written).

use std::net::IpAddr;

use crate::failure::Failure;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnsError {
    NxDomain,
    NoData,
    Temporary(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mx {
    pub pref: u16,
    pub host: Vec<u8>,
}

pub struct Resolver {}

impl Resolver {
    pub fn from_config() -> Result<Resolver, Failure> {
        Ok(Resolver {})
    }

    pub fn mx(&mut self, _name: &[u8]) -> Result<Vec<Mx>, DnsError> {
        Err(DnsError::Temporary("not implemented".into()))
    }

    pub fn ips(&mut self, _name: &[u8], _v4: bool, _v6: bool) -> Result<Vec<IpAddr>, DnsError> {
        Err(DnsError::Temporary("not implemented".into()))
    }
}
