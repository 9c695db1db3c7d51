//! The admin API's listeners: the root-only Unix socket, and optionally a TCP listener with a
//! bearer token and a metrics-only TCP listener. HTTP/1.1 (hyper) on each; requests go to
//! [`super::routes`].
//!
//! The socket is `<run_dir>/admin.sock`, mode 0600, in a run directory created 0700: only root
//! (the daemon's user) can connect. It is bound under a temporary name, restricted, then renamed
//! into place, so no client ever sees it with looser permissions. A socket file left by a
//! killed daemon is replaced; one that still answers belongs to a running daemon and is an
//! error.
use std::{
    net::SocketAddr,
    os::unix::fs::{DirBuilderExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::Arc,
};

use hyper::{server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use thiserror::Error;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, UnixListener},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{
    plane::ControlPlane,
    routes::{self, Access},
};
use crate::admin::api::AdminListeners;
use crate::config::Config;

/// File name of the admin socket inside `[daemon] run_dir`.
pub const SOCKET_NAME: &str = "admin.sock";

/// The admin socket of a configuration.
pub fn socket_path(config: &Config) -> PathBuf {
    config.daemon.run_dir.join(SOCKET_NAME)
}

/// Why the admin API could not start.
#[derive(Debug, Error)]
pub enum ControlError {
    /// The run directory could not be created or used.
    #[error("admin socket directory {}: {source}", path.display())]
    RunDir {
        /// The directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Another daemon answers on the socket.
    #[error("another velocache daemon answers on {}", path.display())]
    InUse {
        /// The socket.
        path: PathBuf,
    },
    /// A listener could not be bound.
    #[error("cannot bind the {what} on {addr}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// Where.
        addr: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The token file could not be read or is empty.
    #[error("admin token file {}: {reason}", path.display())]
    Token {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The bound listeners, not yet serving.
pub struct AdminServer {
    unix: UnixListener,
    path: PathBuf,
    tcp: Option<(TcpListener, Arc<str>)>,
    metrics: Option<TcpListener>,
}

impl AdminServer {
    /// Bind the socket and, if configured, the TCP listeners.
    pub async fn bind(config: &Config) -> Result<Self, ControlError> {
        let path = socket_path(config);
        let unix = bind_socket(&config.daemon.run_dir, &path)?;
        let admin = &config.admin;
        let tcp = match admin.tcp_listen {
            Some(addr) => {
                let token = read_token(admin.token_file.as_deref())?;
                Some((bind_tcp("TCP admin listener", addr).await?, token))
            }
            None => None,
        };
        let metrics = match admin.metrics_listen {
            Some(addr) => Some(bind_tcp("metrics listener", addr).await?),
            None => None,
        };
        Ok(AdminServer {
            unix,
            path,
            tcp,
            metrics,
        })
    }

    /// Where clients reach it.
    pub fn listeners(&self) -> AdminListeners {
        let addr = |l: &TcpListener| l.local_addr().ok().map(|a| a.to_string());
        AdminListeners {
            socket: self.path.display().to_string(),
            tcp: self.tcp.as_ref().and_then(|(l, _)| addr(l)),
            metrics: self.metrics.as_ref().and_then(addr),
        }
    }

    /// Serve until `cancel`; then close the listeners and remove the socket file.
    pub async fn serve(self, plane: Arc<ControlPlane>, cancel: CancellationToken) {
        let listeners = self.listeners();
        info!(socket = %listeners.socket, tcp = ?listeners.tcp, metrics = ?listeners.metrics,
            "admin API listening");
        let _ = plane.listeners.set(listeners);
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                accepted = self.unix.accept() => match accepted {
                    Ok((stream, _)) => {
                        conns.spawn(serve_conn(stream, plane.clone(), Access::Socket));
                    }
                    Err(e) => warn!(error = %e, "admin socket accept failed"),
                },
                accepted = accept_opt(self.tcp.as_ref().map(|(l, _)| l)) => match accepted {
                    Ok((stream, peer)) => {
                        debug!(peer = %peer, "admin TCP connection");
                        let token = self.tcp.as_ref().map(|(_, t)| t.clone()).unwrap_or_default();
                        conns.spawn(serve_conn(stream, plane.clone(), Access::Token(token)));
                    }
                    Err(e) => warn!(error = %e, "admin TCP accept failed"),
                },
                accepted = accept_opt(self.metrics.as_ref()) => match accepted {
                    Ok((stream, _)) => {
                        conns.spawn(serve_conn(stream, plane.clone(), Access::MetricsOnly));
                    }
                    Err(e) => warn!(error = %e, "metrics accept failed"),
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        conns.abort_all();
        drop(self.unix);
        if let Err(e) = std::fs::remove_file(&self.path) {
            debug!(error = %e, "removing the admin socket");
        }
    }
}

async fn accept_opt(
    l: Option<&TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match l {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

async fn serve_conn<S>(stream: S, plane: Arc<ControlPlane>, access: Access)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| routes::handle(plane.clone(), access.clone(), req));
    if let Err(e) = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        debug!(error = %e, "admin connection ended with an error");
    }
}

fn bind_socket(dir: &Path, path: &Path) -> Result<UnixListener, ControlError> {
    let dir_err = |source| ControlError::RunDir {
        path: dir.to_path_buf(),
        source,
    };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(dir_err)?;
    } else if let Ok(meta) = std::fs::metadata(dir)
        && meta.permissions().mode() & 0o022 != 0
    {
        // Not changed: the directory may be shared (an operator's choice). The socket's own
        // mode still keeps other users out.
        warn!(run_dir = %dir.display(), mode = format!("{:o}", meta.permissions().mode() & 0o7777),
            "the run directory is writable by others; prefer a 0700 directory");
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ControlError::InUse {
                path: path.to_path_buf(),
            });
        }
        // Left by a daemon that was killed.
        let _ = std::fs::remove_file(path);
    }
    let tmp = dir.join(format!(".{SOCKET_NAME}.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let bind_err = |source| ControlError::Bind {
        what: "admin socket",
        addr: path.display().to_string(),
        source,
    };
    let std_listener = std::os::unix::net::UnixListener::bind(&tmp).map_err(bind_err)?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&tmp, path))
        .and_then(|()| std_listener.set_nonblocking(true));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(bind_err(e));
    }
    UnixListener::from_std(std_listener).map_err(bind_err)
}

async fn bind_tcp(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ControlError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ControlError::Bind {
            what,
            addr: addr.to_string(),
            source,
        })
}

/// Read a token file (at least 16 characters, surrounding whitespace ignored; a warning when
/// others may read it).
pub fn read_token(file: Option<&Path>) -> Result<Arc<str>, ControlError> {
    let Some(file) = file else {
        // validate() requires token_file with tcp_listen; this is a second guard.
        return Err(ControlError::Token {
            path: PathBuf::new(),
            reason: "admin.tcp_listen is set without admin.token_file".into(),
        });
    };
    let err = |reason: String| ControlError::Token {
        path: file.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(file).map_err(|e| err(e.to_string()))?;
    let token = text.trim();
    if token.len() < 16 {
        return Err(err("the token must be at least 16 characters".into()));
    }
    if let Ok(meta) = std::fs::metadata(file)
        && meta.permissions().mode() & 0o077 != 0
    {
        warn!(token_file = %file.display(), "the admin token file is readable by others; chmod 600 it");
    }
    Ok(Arc::from(token))
}
