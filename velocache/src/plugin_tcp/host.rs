//! The plugin runtime as the stream driver sees it: [`Plugins`] is the daemon's
//! [`StreamPlugins`], its [`TcpSession`] a [`StreamSession`]. Events and commands cross between
//! the driver's types and the WIT bindings here, by moving their fields, and nowhere else.
use super::session::{Command, Event, SessionError, StreamPlugins, StreamSession, Target};
use crate::plugins::{Plugins, TcpCommand, TcpEvent, TcpSession, TcpTarget};

impl StreamPlugins for Plugins {
    fn tcp_ports(&self) -> Vec<(String, u16)> {
        Plugins::tcp_ports(self)
    }

    fn tcp_session(&self, port: u16) -> Option<Box<dyn StreamSession>> {
        Plugins::tcp_session(self, port).map(|s| Box::new(s) as Box<dyn StreamSession>)
    }
}

impl StreamSession for TcpSession {
    fn plugin(&self) -> &str {
        TcpSession::plugin(self)
    }

    fn event(&mut self, ev: Event) -> Result<Vec<Command>, SessionError> {
        match TcpSession::event(self, to_wit(ev)) {
            Ok(commands) => Ok(commands.into_iter().map(from_wit).collect()),
            Err(e) => Err(SessionError::Disabled {
                plugin: TcpSession::plugin(self).to_string(),
                reason: e.to_string(),
            }),
        }
    }
}

fn to_wit(ev: Event) -> TcpEvent {
    match ev {
        Event::Opened { client, orig_dst } => TcpEvent::Opened((client, orig_dst)),
        Event::ClientData(d) => TcpEvent::ClientData(d),
        Event::UpstreamConnected => TcpEvent::UpstreamConnected,
        Event::UpstreamFailed(why) => TcpEvent::UpstreamFailed(why),
        Event::UpstreamData(d) => TcpEvent::UpstreamData(d),
        Event::ClientClosed => TcpEvent::ClientClosed,
        Event::UpstreamClosed => TcpEvent::UpstreamClosed,
    }
}

fn from_wit(c: TcpCommand) -> Command {
    match c {
        TcpCommand::ToClient(b) => Command::ToClient(b),
        TcpCommand::ToUpstream(b) => Command::ToUpstream(b),
        TcpCommand::Connect(TcpTarget { host, port }) => Command::Connect(Target { host, port }),
        TcpCommand::Splice => Command::Splice,
        TcpCommand::Tag((name, value)) => Command::Tag(name, value),
        TcpCommand::Close => Command::Close,
    }
}
