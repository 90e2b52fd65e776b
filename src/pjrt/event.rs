//! `PJRT_Event`: completion of an asynchronous transfer or execution.

use std::sync::Arc;

use super::error::Result;
use super::plugin::Plugin;
use super::sys::{self, Args};

/// An owned PJRT event, destroyed on drop.
pub struct Event {
    plugin: Arc<Plugin>,
    raw: *mut sys::PJRT_Event,
}

// SAFETY: PJRT events may be awaited and destroyed from any thread.
unsafe impl Send for Event {}
unsafe impl Sync for Event {}

impl Event {
    /// Wraps an event returned by the plugin (None if null).
    pub(crate) fn from_raw(plugin: &Arc<Plugin>, raw: *mut sys::PJRT_Event) -> Option<Event> {
        (!raw.is_null()).then(|| Event { plugin: plugin.clone(), raw })
    }

    /// Blocks until the event is ready and returns its error status.
    pub fn wait(self) -> Result<()> {
        let mut args = sys::PJRT_Event_Await_Args::new();
        args.event = self.raw;
        call!(&self.plugin, PJRT_Event_Await, &mut args)
    }

    /// Whether the event is ready, without blocking.
    pub fn is_ready(&self) -> Result<bool> {
        let mut args = sys::PJRT_Event_IsReady_Args::new();
        args.event = self.raw;
        call!(&self.plugin, PJRT_Event_IsReady, &mut args)?;
        Ok(args.is_ready)
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        let mut args = sys::PJRT_Event_Destroy_Args::new();
        args.event = self.raw;
        if let Err(e) = call!(&self.plugin, PJRT_Event_Destroy, &mut args) {
            tracing::warn!("destroying a PJRT event: {e}");
        }
    }
}

/// Waits for an optional event (a null event means the work is already done).
pub(crate) fn wait_raw(plugin: &Arc<Plugin>, raw: *mut sys::PJRT_Event) -> Result<()> {
    match Event::from_raw(plugin, raw) {
        Some(e) => e.wait(),
        None => Ok(()),
    }
}
