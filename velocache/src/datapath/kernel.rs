//! The kernel side as the daemon's life sees it ([`Kernel`]): the LAN classifier, when LAN
//! interfaces are configured, and the XDP owner, started and stopped as one.
//!
//! It enters running (the classifier attached by [`Datapath::start`]) with the XDP slots the
//! services claimed while they were built; [`KernelSide::start`] attaches those. It leaves
//! through [`Kernel::stop`]: the classifier is detached first — new flows then go straight to
//! their destinations — and XDP last, so media the fast path relays keeps flowing until the
//! very end, as it did when the SIP service owned its program.
use super::{Counters, Datapath, DatapathError, Kernel, TlsEvents, TlsMaps, XdpOwner};
use crate::config::{DatapathConfig, Intercept};

/// The classifier (if any) and the XDP owner.
pub(super) struct KernelSide {
    classifier: Option<Datapath>,
    xdp: XdpOwner,
}

impl KernelSide {
    /// Attach the claimed XDP slots next to an attached classifier; `None` when there is neither.
    pub(super) fn start(classifier: Option<Datapath>, xdp: XdpOwner) -> Option<Box<dyn Kernel>> {
        xdp.attach();
        if classifier.is_none() && !xdp.claimed() {
            return None;
        }
        Some(Box::new(KernelSide { classifier, xdp }))
    }
}

impl Kernel for KernelSide {
    fn counters(&self) -> Option<Counters> {
        self.classifier.as_ref().map(Datapath::counters)
    }

    fn reconfigure(
        &mut self,
        cfg: &DatapathConfig,
        intercepts: &[Intercept],
    ) -> Result<(), DatapathError> {
        match &mut self.classifier {
            Some(c) => c.reconfigure(cfg, intercepts),
            None => Ok(()),
        }
    }

    fn take_tls(&mut self) -> Option<(TlsMaps, TlsEvents)> {
        self.classifier.as_mut().and_then(Datapath::take_tls)
    }

    fn stop(self: Box<Self>) -> futures::future::BoxFuture<'static, ()> {
        Box::pin(async move {
            let KernelSide { classifier, xdp } = *self;
            if let Some(c) = classifier {
                c.stop().await;
            }
            xdp.detach();
        })
    }
}
