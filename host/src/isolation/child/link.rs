//! A call connection as the plugin's host services see it during one call:
//! each service is one [`Frame::Service`] answered by one [`Frame::Reply`].

use std::cell::RefCell;

use kozmo_interface::{PluginError, Result};
use kozmo_isolation_protocol::{Frame, Service, Value};

use crate::isolation::conn::Conn;
use crate::isolation::wire;

/// The connection of the call in progress.
pub struct Link<'a>(RefCell<&'a mut Conn>);

fn broken(what: &str, detail: impl std::fmt::Display) -> PluginError {
    PluginError::system("IsolationLink", format!("{what}: {detail}")).retryable(true)
}

impl<'a> Link<'a> {
    /// Serves the call on `conn`.
    pub fn new(conn: &'a mut Conn) -> Self {
        Link(RefCell::new(conn))
    }

    /// Asks the daemon for `service`.
    pub fn call(&self, service: Service) -> Result<Value> {
        let mut conn = self.0.borrow_mut();
        match conn.request(&Frame::Service(service)) {
            Ok(Frame::Reply(Ok(v))) => Ok(v),
            Ok(Frame::Reply(Err(e))) => Err(wire::from_wire(e)),
            Ok(other) => Err(broken("unexpected answer from the daemon", other.name())),
            Err(e) => Err(broken("lost the daemon", e)),
        }
    }

    /// A service answered with text.
    pub fn text(&self, service: Service) -> Result<String> {
        match self.call(service)? {
            Value::Text(s) => Ok(s),
            other => Err(broken("expected text from the daemon", format!("{other:?}"))),
        }
    }

    /// A service answered with nothing.
    pub fn unit(&self, service: Service) -> Result<()> {
        match self.call(service)? {
            Value::Unit => Ok(()),
            other => Err(broken("expected no value from the daemon", format!("{other:?}"))),
        }
    }

    /// A service answered with a handle.
    pub fn handle(&self, service: Service) -> Result<u64> {
        match self.call(service)? {
            Value::Handle(h) => Ok(h),
            other => Err(broken("expected a handle from the daemon", format!("{other:?}"))),
        }
    }

    /// A service answered with JSON text of `T`.
    pub fn json<T: serde::de::DeserializeOwned>(&self, service: Service, what: &str) -> Result<T> {
        wire::parse(&self.text(service)?, what)
    }
}
