//! Colours and glyphs. Everything the views paint goes through a [`Theme`], so `NO_COLOR`
//! (https://no-color.org) switches the whole dashboard to plain text in one place: vCPUs are
//! then told apart by their letters and chart markers, never by colour alone.

use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols::Marker;

/// Palette for VMs: one hue per VM, cycled. Chosen to stay distinct on dark and light
/// terminals and from the grey used for other tasks.
const VM_COLOURS: [Color; 8] = [
    Color::Cyan,
    Color::Yellow,
    Color::Magenta,
    Color::Green,
    Color::Blue,
    Color::LightRed,
    Color::LightGreen,
    Color::LightMagenta,
];

/// Chart markers cycled per vCPU so lines stay distinguishable without colour.
const MARKERS: [Marker; 4] = [
    Marker::Braille,
    Marker::Dot,
    Marker::Block,
    Marker::HalfBlock,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Theme {
    pub colour: bool,
}

impl Theme {
    /// Colour unless `NO_COLOR` is set to a non-empty value.
    pub fn from_env() -> Self {
        let no_colour = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Theme { colour: !no_colour }
    }

    pub const fn coloured() -> Self {
        Theme { colour: true }
    }

    pub const fn plain() -> Self {
        Theme { colour: false }
    }

    fn fg(&self, c: Color) -> Style {
        if self.colour {
            Style::new().fg(c)
        } else {
            Style::new()
        }
    }

    /// Colour of VM number `index` (its position among the snapshot's VMs).
    pub fn vm(&self, index: usize) -> Style {
        self.fg(VM_COLOURS[index % VM_COLOURS.len()])
    }

    /// A lane cell owned by a vCPU of VM `index`: the VM hue as background so a row of
    /// letters reads as a coloured bar.
    pub fn lane_vcpu(&self, index: usize) -> Style {
        if self.colour {
            Style::new()
                .bg(VM_COLOURS[index % VM_COLOURS.len()])
                .fg(Color::Black)
        } else {
            Style::new()
        }
    }

    pub fn lane_other(&self) -> Style {
        self.fg(Color::DarkGray)
    }

    pub fn lane_idle(&self) -> Style {
        self.fg(Color::DarkGray)
    }

    pub fn marker(&self, series_index: usize) -> Marker {
        if self.colour {
            Marker::Braille
        } else {
            MARKERS[series_index % MARKERS.len()]
        }
    }

    pub fn title(&self) -> Style {
        Style::new().add_modifier(Modifier::BOLD)
    }

    pub fn dim(&self) -> Style {
        if self.colour {
            Style::new().fg(Color::DarkGray)
        } else {
            Style::new()
        }
    }

    pub fn good(&self) -> Style {
        self.fg(Color::Green)
    }

    pub fn warn(&self) -> Style {
        self.fg(Color::Yellow)
    }

    pub fn bad(&self) -> Style {
        self.fg(Color::Red).add_modifier(Modifier::BOLD)
    }

    /// Same-pCPU vs migrated bars in the VMCS panel.
    pub fn same_pcpu(&self) -> Style {
        self.fg(Color::Green)
    }

    pub fn migrated(&self) -> Style {
        self.fg(Color::LightRed)
    }

    pub fn header_bar(&self) -> Style {
        if self.colour {
            Style::new().bg(Color::Blue).fg(Color::White)
        } else {
            Style::new().add_modifier(Modifier::REVERSED)
        }
    }

    pub fn selected(&self) -> Style {
        Style::new().add_modifier(Modifier::REVERSED)
    }
}
