//! A plain X11 window for the tests: a solid colour with a title, that a test can focus and
//! close (something to share, and something to take the focus away from the app).

use x11rb::connection::Connection;
use x11rb::protocol::xproto::{
    AtomEnum, ConfigureWindowAux, ConnectionExt as _, CreateWindowAux, InputFocus, MapState,
    PropMode, StackMode, WindowClass,
};
use x11rb::rust_connection::RustConnection;
use x11rb::wrapper::ConnectionExt as _;
use x11rb::{COPY_DEPTH_FROM_PARENT, CURRENT_TIME};

/// A mapped top-level window filled with one colour.
pub struct TestWindow {
    conn: RustConnection,
    pub id: u32,
}

impl TestWindow {
    /// Opens the window at (`x`, `y`), `w` × `h`, filled with `rgb` (0xRRGGBB), on top, and
    /// waits until it is shown.
    pub fn open(title: &str, (x, y, w, h): (i16, i16, u16, u16), rgb: u32) -> TestWindow {
        let (conn, n) = x11rb::connect(None).expect("an X display (DISPLAY)");
        let root = conn.setup().roots[n].root;
        let id = conn.generate_id().expect("an X id");
        conn.create_window(
            COPY_DEPTH_FROM_PARENT,
            id,
            root,
            x,
            y,
            w,
            h,
            0,
            WindowClass::INPUT_OUTPUT,
            0,
            &CreateWindowAux::new().background_pixel(rgb),
        )
        .expect("create_window");
        conn.change_property8(
            PropMode::REPLACE,
            id,
            AtomEnum::WM_NAME,
            AtomEnum::STRING,
            title.as_bytes(),
        )
        .expect("WM_NAME");
        conn.map_window(id).expect("map");
        conn.configure_window(id, &ConfigureWindowAux::new().stack_mode(StackMode::ABOVE))
            .expect("raise");
        conn.flush().expect("flush");
        for _ in 0..100 {
            let shown = conn
                .get_window_attributes(id)
                .ok()
                .and_then(|c| c.reply().ok())
                .is_some_and(|a| a.map_state == MapState::VIEWABLE);
            if shown {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        TestWindow { conn, id }
    }

    /// Gives this window the keyboard focus (as if the person switched to it).
    pub fn focus(&self) {
        self.conn
            .set_input_focus(InputFocus::PARENT, self.id, CURRENT_TIME)
            .expect("set_input_focus");
        self.conn.flush().expect("flush");
    }

    /// Closes (destroys) the window.
    pub fn close(self) {
        let _ = self.conn.destroy_window(self.id);
        let _ = self.conn.flush();
    }
}
