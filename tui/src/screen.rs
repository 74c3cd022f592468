//! The terminal the dashboard draws on: ratatui's set-up (raw mode, the alternate screen, a
//! panic hook that restores both) with a writer that holds a whole frame, so that each frame
//! reaches the terminal in one write.
//!
//! Through stdout's own buffer (1 KiB, flushed whenever it fills) a full frame went out in
//! nine or more writes; on a loaded host the dashboard could be descheduled between two of
//! them, and the terminal (tmux, whose screen the tests read) showed the frame's top half new
//! and its bottom half old or blank.

use std::io::{self, BufWriter, Stdout, Write};

use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;

/// Bytes a frame may take and still go out in one write: a full redraw of the dashboard at
/// 120x40 is about 10 KiB with its colours, a few times that on a large terminal.
pub const FRAME_BYTES: usize = 256 << 10;

pub type Screen = Terminal<CrosstermBackend<BufWriter<Stdout>>>;

/// Raw mode and the alternate screen on (and restored on panic), drawing through
/// [`frame_writer`]. `ratatui::restore` undoes it.
pub fn open() -> io::Result<Screen> {
    // ratatui's own set-up, then its terminal replaced by one on the frame writer.
    drop(ratatui::try_init()?);
    Terminal::new(CrosstermBackend::new(frame_writer(io::stdout())))
}

/// The writer frames are drawn through: ratatui flushes it once at the end of each frame.
pub fn frame_writer<W: Write>(out: W) -> BufWriter<W> {
    BufWriter::with_capacity(FRAME_BYTES, out)
}

#[cfg(test)]
mod tests {
    use ratatui::backend::Backend;
    use ratatui::buffer::Buffer;
    use ratatui::layout::Rect;
    use ratatui::widgets::Widget;

    use super::*;
    use crate::fixture;
    use crate::theme::Theme;
    use crate::view::Dashboard;

    /// Counts the writes that reach the terminal: the length of each.
    #[derive(Clone, Default)]
    struct Terminal {
        writes: std::rc::Rc<std::cell::RefCell<Vec<usize>>>,
    }

    impl Write for Terminal {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.writes.borrow_mut().push(buf.len());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A whole frame, drawn from scratch as the first one is: the 512-vCPU host at 120x40 and
    /// the demo at 250x80 each reach the terminal in one write.
    #[test]
    fn a_full_frame_reaches_the_terminal_in_one_write() {
        let big = fixture::live_app(fixture::snapshot_of(
            model::synth::big_host_config(512, 128),
            0.02,
        ));
        let demo = fixture::live_app(fixture::demo_snapshot());
        for (app, area) in [
            (&big, Rect::new(0, 0, 120, 40)),
            (&demo, Rect::new(0, 0, 250, 80)),
        ] {
            let mut frame = Buffer::empty(area);
            Dashboard {
                app,
                theme: Theme::coloured(),
            }
            .render(area, &mut frame);
            let terminal = Terminal::default();
            let mut backend = CrosstermBackend::new(frame_writer(terminal.clone()));
            backend
                .draw(frame.content.iter().enumerate().map(|(i, cell)| {
                    let (x, y) = frame.pos_of(i);
                    (x, y, cell)
                }))
                .unwrap();
            Backend::flush(&mut backend).unwrap();
            let writes = terminal.writes.borrow();
            assert_eq!(
                writes.len(),
                1,
                "{area:?}: a frame in {} writes: {writes:?}",
                writes.len()
            );
            assert!(writes[0] > 4096, "{area:?}: the whole frame: {writes:?}");
        }
    }
}
