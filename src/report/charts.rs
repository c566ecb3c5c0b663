//! The trending charts of the Extended Service Delivery report: PNG images
//! drawn with plotters into a memory buffer. Text is drawn with DejaVu Sans
//! compiled into the binary (the `dejavu` crate), so charts look the same
//! on a host without any font installed.

use std::sync::OnceLock;

use plotters::coord::ranged1d::{IntoSegmentedCoord, SegmentValue, SegmentedCoord};
use plotters::coord::types::{RangedCoordf64, RangedCoordi32};
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

/// Pixels of every chart: two thirds of a phone screen's height at most
/// when shown 100% wide.
pub const WIDTH: u32 = 640;
pub const HEIGHT: u32 = 300;

const FONT: &str = "sans-serif";
/// Text sizes in pixels: charts are shown about half their width on a
/// phone, so text is drawn large.
const CAPTION: u32 = 26;
const LABEL: u32 = 19;
const LEGEND: u32 = 18;

/// What the trending charts show, one entry per month, oldest first.
#[derive(Debug, Clone, Default)]
pub struct Trend {
    /// `Nov 26`, per month.
    pub labels: Vec<String>,
    /// Availability (percent) per service and month (none when the month
    /// has no figure for it).
    pub services: Vec<(String, Vec<Option<f64>>)>,
    pub target: f64,
    /// Incidents opened per month, P1 to P5.
    pub incidents: Vec<[usize; 5]>,
    /// MTTR in hours per month.
    pub mttr_hours: Vec<Option<f64>>,
    /// Percent within SLA per month.
    pub response: Vec<Option<f64>>,
    pub resolution: Vec<Option<f64>>,
}

/// One chart as a PNG file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chart {
    /// `availability`, `incidents`, `mttr` or `sla`: file name and
    /// Content-ID stem.
    pub name: &'static str,
    pub title: String,
    pub png: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("the embedded chart font cannot be loaded")]
    Font,
    #[error("cannot draw the {chart} chart: {message}")]
    Draw {
        chart: &'static str,
        message: String,
    },
    #[error("cannot encode the {chart} chart as PNG: {source}")]
    Encode {
        chart: &'static str,
        source: png::EncodingError,
    },
}

/// Registers the embedded font once per process.
fn font() -> Result<(), ChartError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok()
            && register_font(FONT, FontStyle::Bold, dejavu::sans::bold()).is_ok()
    });
    ok.then_some(()).ok_or(ChartError::Font)
}

/// A series colour per position (colour-blind friendly, Okabe–Ito).
const PALETTE: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(213, 94, 0),
    RGBColor(120, 120, 120),
];

/// Priority colours, P1 to P5.
const PRIORITY_COLOURS: [RGBColor; 5] = [
    RGBColor(185, 28, 28),
    RGBColor(234, 88, 12),
    RGBColor(202, 138, 4),
    RGBColor(37, 99, 235),
    RGBColor(107, 114, 128),
];

/// The four trending charts.
pub fn draw(trend: &Trend) -> Result<Vec<Chart>, ChartError> {
    font()?;
    Ok(vec![
        availability(trend)?,
        incidents(trend)?,
        mttr(trend)?,
        sla(trend)?,
    ])
}

fn draw_error<E: std::fmt::Debug>(chart: &'static str) -> impl Fn(E) -> ChartError {
    move |e| ChartError::Draw {
        chart,
        message: format!("{e:?}"),
    }
}

/// Draws into an RGB buffer with `paint`, then encodes it.
fn png_of<F>(chart: &'static str, paint: F) -> Result<Vec<u8>, ChartError>
where
    F: FnOnce(&DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>) -> Result<(), ChartError>,
{
    // The buffer starts white: the background. One buffer per thread,
    // reused: fresh ones cost a page fault per 4 KB.
    let mut pixels = PIXELS.with_borrow_mut(std::mem::take);
    pixels.clear();
    pixels.resize((WIDTH * HEIGHT * 3) as usize, 255);
    let result = draw_and_encode(chart, &mut pixels, paint);
    PIXELS.with_borrow_mut(|kept| *kept = pixels);
    result
}

thread_local! {
    /// The RGB buffer charts are drawn into, per thread.
    static PIXELS: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    /// [`indexed`]'s table of grid colours, per thread.
    static SLOTS: std::cell::RefCell<Vec<u16>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn draw_and_encode<F>(
    chart: &'static str,
    pixels: &mut [u8],
    paint: F,
) -> Result<Vec<u8>, ChartError>
where
    F: FnOnce(&DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>) -> Result<(), ChartError>,
{
    {
        let root = BitMapBackend::with_buffer(pixels, (WIDTH, HEIGHT)).into_drawing_area();
        paint(&root)?;
        root.present().map_err(draw_error(chart))?;
    }
    let mut out = Vec::with_capacity(16 * 1024);
    let mut encoder = png::Encoder::new(&mut out, WIDTH, HEIGHT);
    encoder.set_depth(png::BitDepth::Eight);
    // A palette of at most 256 colours gives the compressor a third of
    // the bytes of RGB; on palette rows, Paeth filtering with the fast
    // compressor (fdeflate) was the best trade measured: about 12 KB per
    // chart, several times faster than miniz at its default level, which
    // makes about 7 KB.
    encoder.set_compression(png::Compression::Fast);
    encoder.set_filter(png::Filter::Paeth);
    let palette = SLOTS.with_borrow_mut(|slots| indexed(pixels, slots));
    let image: &[u8] = match &palette {
        Some((palette, indices)) => {
            encoder.set_color(png::ColorType::Indexed);
            encoder.set_palette(palette.as_slice());
            indices
        }
        None => {
            encoder.set_color(png::ColorType::Rgb);
            pixels
        }
    };
    let encode = |source| ChartError::Encode { chart, source };
    let mut writer = encoder.write_header().map_err(encode)?;
    writer.write_image_data(image).map_err(encode)?;
    writer.finish().map_err(encode)?;
    Ok(out)
}

/// The image as a palette of at most 256 colours and one index per pixel.
/// Anti-aliased text makes more shades than that, so colours snap to a
/// grid: every channel to a multiple of 4 (white stays white), or of 8 or
/// 16 if that still makes too many; at most 8 of 255 off, invisible at
/// this size. `None` when even the coarsest grid does not fit.
fn indexed(pixels: &[u8], slot: &mut Vec<u16>) -> Option<(Vec<u8>, Vec<u8>)> {
    'grid: for shift in [2u32, 3, 4] {
        // Levels 0..=top per channel; level q is the value min(q << shift, 255).
        let top = 256usize >> shift;
        let half = 1usize << (shift - 1);
        let mut level = [0usize; 256];
        for (c, l) in level.iter_mut().enumerate() {
            *l = ((c + half) >> shift).min(top);
        }
        let side = top + 1;
        // Palette index + 1 of each grid colour; 0 for none yet. Only the
        // entries used are cleared afterwards.
        slot.resize(side * side * side, 0);
        let mut used: Vec<usize> = Vec::with_capacity(256);
        let mut palette: Vec<u8> = Vec::with_capacity(256 * 3);
        let mut indices = Vec::with_capacity(pixels.len() / 3);
        // Runs of one colour are the rule: compare each pixel with the
        // one before as one number.
        let mut last: Option<(u32, u8)> = None;
        for rgb in pixels.chunks_exact(3) {
            let raw = (u32::from(rgb[0]) << 16) | (u32::from(rgb[1]) << 8) | u32::from(rgb[2]);
            if let Some((previous, i)) = last
                && previous == raw
            {
                indices.push(i);
                continue;
            }
            let (r, g, b) = (
                level[usize::from(rgb[0])],
                level[usize::from(rgb[1])],
                level[usize::from(rgb[2])],
            );
            let key = (r * side + g) * side + b;
            let i = match slot[key] {
                0 => {
                    let Ok(i) = u8::try_from(palette.len() / 3) else {
                        for key in used {
                            slot[key] = 0;
                        }
                        continue 'grid;
                    };
                    used.push(key);
                    let value = |q: usize| u8::try_from((q << shift).min(255)).unwrap_or(255);
                    palette.extend([value(r), value(g), value(b)]);
                    slot[key] = u16::from(i) + 1;
                    i
                }
                n => u8::try_from(n - 1).unwrap_or(0),
            };
            last = Some((raw, i));
            indices.push(i);
        }
        for key in used {
            slot[key] = 0;
        }
        return Some((palette, indices));
    }
    None
}

fn label<'a>(labels: &'a [String]) -> impl Fn(&SegmentValue<i32>) -> String + 'a {
    move |v| match v {
        SegmentValue::CenterOf(i) => usize::try_from(*i)
            .ok()
            .and_then(|i| labels.get(i))
            .cloned()
            .unwrap_or_default(),
        _ => String::new(),
    }
}

fn last_index(labels: &[String]) -> i32 {
    i32::try_from(labels.len().max(1) - 1).unwrap_or(0)
}

/// Consecutive known points of a series, as separate runs (a month with
/// no figure breaks the line).
fn runs(values: &[Option<f64>]) -> Vec<Vec<(SegmentValue<i32>, f64)>> {
    let mut out: Vec<Vec<(SegmentValue<i32>, f64)>> = vec![Vec::new()];
    for (i, v) in values.iter().enumerate() {
        match v {
            Some(v) => {
                if let Some(run) = out.last_mut() {
                    run.push((SegmentValue::CenterOf(i32::try_from(i).unwrap_or(0)), *v));
                }
            }
            None => out.push(Vec::new()),
        }
    }
    out.retain(|r| !r.is_empty());
    out
}

/// A chart of one value per month (availability, MTTR, SLA %).
type Monthly<'a, 'b> = ChartContext<
    'a,
    BitMapBackend<'b>,
    Cartesian2d<SegmentedCoord<RangedCoordi32>, RangedCoordf64>,
>;

/// The frame every monthly line chart shares: the caption, one x label
/// per month, `y` with its labels written by `y_label`.
fn monthly<'a, 'b>(
    root: &'a DrawingArea<BitMapBackend<'b>, plotters::coord::Shift>,
    name: &'static str,
    title: &str,
    labels: &[String],
    y: std::ops::Range<f64>,
    y_area: u32,
    y_label: &dyn Fn(&f64) -> String,
) -> Result<Monthly<'a, 'b>, ChartError> {
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FONT, CAPTION).into_font().style(FontStyle::Bold))
        .margin(10)
        .x_label_area_size(34)
        .y_label_area_size(y_area)
        .build_cartesian_2d((0..last_index(labels)).into_segmented(), y)
        .map_err(draw_error(name))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_labels(6)
        .light_line_style(RGBColor(243, 244, 246))
        .x_labels(labels.len())
        .x_label_formatter(&label(labels))
        .y_label_formatter(y_label)
        .label_style((FONT, LABEL))
        .draw()
        .map_err(draw_error(name))?;
    Ok(chart)
}

/// `values` as lines with a dot on each month, broken where a month has
/// none.
fn line(
    chart: &mut Monthly<'_, '_>,
    name: &'static str,
    values: &[Option<f64>],
    colour: RGBColor,
    dot: i32,
) -> Result<(), ChartError> {
    for run in runs(values) {
        chart
            .draw_series(LineSeries::new(run.clone(), colour.stroke_width(2)))
            .map_err(draw_error(name))?;
        chart
            .draw_series(PointSeries::of_element(
                run,
                dot,
                colour.filled(),
                &|c, s, st| Circle::new(c, s, st),
            ))
            .map_err(draw_error(name))?;
    }
    Ok(())
}

/// A legend entry for a line drawn already, without drawing anything more.
fn line_legend(
    chart: &mut Monthly<'_, '_>,
    name: &'static str,
    text: String,
    colour: RGBColor,
) -> Result<(), ChartError> {
    chart
        .draw_series(std::iter::empty::<Circle<(SegmentValue<i32>, f64), i32>>())
        .map_err(draw_error(name))?
        .label(text)
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], colour.stroke_width(2)));
    Ok(())
}

/// Draws the legend box of `chart` at `position`.
fn legend<'b: 'a, 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, BitMapBackend<'b>, CT>,
    name: &'static str,
    position: SeriesLabelPosition,
) -> Result<(), ChartError> {
    chart
        .configure_series_labels()
        .position(position)
        .label_font((FONT, LEGEND))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(draw_error(name))
}

fn availability(trend: &Trend) -> Result<Chart, ChartError> {
    const NAME: &str = "availability";
    let title = "Availability per service (%)".to_string();
    let lowest = trend
        .services
        .iter()
        .flat_map(|(_, v)| v.iter().flatten())
        .copied()
        .fold(trend.target, f64::min);
    // Room under the lowest point, on a readable step.
    let floor = if lowest >= 99.0 {
        ((lowest - 0.05) * 10.0).floor() / 10.0
    } else {
        (lowest - 1.0).floor().max(0.0)
    };
    let png = png_of(NAME, |root| {
        let mut chart = monthly(
            root,
            NAME,
            &title,
            &trend.labels,
            floor..100.0 + (100.0 - floor) * 0.04,
            78,
            &|v| format!("{v:.2}"),
        )?;
        chart
            .draw_series(DashedLineSeries::new(
                [
                    (SegmentValue::Exact(0), trend.target),
                    (SegmentValue::Last, trend.target),
                ],
                6,
                4,
                RED.stroke_width(2),
            ))
            .map_err(draw_error(NAME))?
            .label(format!(
                "target {}",
                super::compute::percent_text(trend.target)
            ))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], RED.stroke_width(2)));
        for (i, (service, values)) in trend.services.iter().enumerate() {
            let colour = PALETTE[i % PALETTE.len()];
            line(&mut chart, NAME, values, colour, 3)?;
            line_legend(&mut chart, NAME, service.clone(), colour)?;
        }
        legend(&mut chart, NAME, SeriesLabelPosition::LowerLeft)
    })?;
    Ok(Chart {
        name: NAME,
        title,
        png,
    })
}

fn incidents(trend: &Trend) -> Result<Chart, ChartError> {
    const NAME: &str = "incidents";
    let title = "Incidents opened per month, by priority".to_string();
    let top = trend
        .incidents
        .iter()
        .map(|p| p.iter().sum::<usize>())
        .max()
        .unwrap_or(0)
        .max(4);
    // Headroom for the legend in the upper left corner.
    let top = u32::try_from(top + top * 3 / 4 + 1).unwrap_or(u32::MAX);
    let png = png_of(NAME, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(&title, (FONT, CAPTION).into_font().style(FontStyle::Bold))
            .margin(10)
            .x_label_area_size(34)
            .y_label_area_size(60)
            .build_cartesian_2d((0..last_index(&trend.labels)).into_segmented(), 0u32..top)
            .map_err(draw_error(NAME))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .y_labels(6)
            .light_line_style(RGBColor(243, 244, 246))
            .x_labels(trend.labels.len())
            .x_label_formatter(&label(&trend.labels))
            .y_label_formatter(&|v| v.to_string())
            .label_style((FONT, LABEL))
            .draw()
            .map_err(draw_error(NAME))?;
        for (p, colour) in PRIORITY_COLOURS.iter().enumerate() {
            let bars = trend
                .incidents
                .iter()
                .enumerate()
                .filter_map(|(i, counts)| {
                    let below: usize = counts[..p].iter().sum();
                    let count = counts[p];
                    (count > 0).then(|| {
                        let x = i32::try_from(i).unwrap_or(0);
                        let mut bar = Rectangle::new(
                            [
                                (
                                    SegmentValue::Exact(x),
                                    u32::try_from(below).unwrap_or(u32::MAX),
                                ),
                                (
                                    SegmentValue::Exact(x + 1),
                                    u32::try_from(below + count).unwrap_or(u32::MAX),
                                ),
                            ],
                            colour.filled(),
                        );
                        bar.set_margin(0, 0, 12, 12);
                        bar
                    })
                });
            let colour = *colour;
            chart
                .draw_series(bars)
                .map_err(draw_error(NAME))?
                .label(format!("P{}", p + 1))
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled())
                });
        }
        legend(&mut chart, NAME, SeriesLabelPosition::UpperLeft)
    })?;
    Ok(Chart {
        name: NAME,
        title,
        png,
    })
}

fn mttr(trend: &Trend) -> Result<Chart, ChartError> {
    const NAME: &str = "mttr";
    let title = "Mean time to resolve (hours, on hold excluded)".to_string();
    let top = trend
        .mttr_hours
        .iter()
        .flatten()
        .copied()
        .fold(1.0f64, f64::max);
    let top = top * 1.15;
    let png = png_of(NAME, |root| {
        let mut chart = monthly(root, NAME, &title, &trend.labels, 0.0..top, 60, &|v| {
            format!("{v:.1}")
        })?;
        line(&mut chart, NAME, &trend.mttr_hours, PALETTE[0], 4)
    })?;
    Ok(Chart {
        name: NAME,
        title,
        png,
    })
}

fn sla(trend: &Trend) -> Result<Chart, ChartError> {
    const NAME: &str = "sla";
    let title = "Incidents within SLA (%)".to_string();
    let lowest = trend
        .response
        .iter()
        .chain(&trend.resolution)
        .flatten()
        .copied()
        .fold(100.0f64, f64::min);
    let floor = ((lowest - 5.0) / 10.0).floor().max(0.0) * 10.0;
    let png = png_of(NAME, |root| {
        let mut chart = monthly(root, NAME, &title, &trend.labels, floor..100.5, 60, &|v| {
            format!("{v:.0}")
        })?;
        for (i, (name, values)) in [
            ("response", &trend.response),
            ("resolution", &trend.resolution),
        ]
        .into_iter()
        .enumerate()
        {
            line(&mut chart, NAME, values, PALETTE[i], 4)?;
            line_legend(&mut chart, NAME, name.to_string(), PALETTE[i])?;
        }
        legend(&mut chart, NAME, SeriesLabelPosition::LowerLeft)
    })?;
    Ok(Chart {
        name: NAME,
        title,
        png,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trend() -> Trend {
        let labels: Vec<String> = [
            "May 26", "Jun 26", "Jul 26", "Aug 26", "Sep 26", "Oct 26", "Nov 26",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        Trend {
            services: vec![
                (
                    "IP-VPN".into(),
                    vec![
                        Some(100.0),
                        Some(99.95),
                        None,
                        Some(99.99),
                        Some(99.7),
                        Some(100.0),
                        Some(99.93),
                    ],
                ),
                ("Internet".into(), vec![Some(100.0); 7]),
            ],
            target: 99.9,
            incidents: vec![
                [1, 2, 3, 4, 0],
                [0, 1, 5, 2, 1],
                [0; 5],
                [2, 0, 1, 0, 0],
                [0, 0, 9, 3, 1],
                [1, 1, 1, 1, 1],
                [0, 3, 2, 1, 0],
            ],
            mttr_hours: vec![
                Some(3.5),
                Some(1.0),
                None,
                Some(8.25),
                Some(2.0),
                Some(0.5),
                Some(4.0),
            ],
            response: vec![
                Some(100.0),
                Some(90.0),
                None,
                Some(50.0),
                Some(100.0),
                Some(100.0),
                Some(87.5),
            ],
            resolution: vec![
                Some(100.0),
                Some(80.0),
                None,
                Some(100.0),
                Some(75.0),
                Some(100.0),
                Some(100.0),
            ],
            labels,
        }
    }

    #[test]
    fn charts_are_png_images_of_the_stated_size() {
        let charts = draw(&trend()).unwrap();
        assert_eq!(
            charts.iter().map(|c| c.name).collect::<Vec<_>>(),
            ["availability", "incidents", "mttr", "sla"]
        );
        for chart in &charts {
            let decoder = png::Decoder::new(std::io::Cursor::new(&chart.png));
            let reader = decoder.read_info().unwrap();
            let info = reader.info();
            assert_eq!((info.width, info.height), (WIDTH, HEIGHT), "{}", chart.name);
            if let Ok(dir) = std::env::var("CSMD_CHART_DIR") {
                std::fs::write(format!("{dir}/{}.png", chart.name), &chart.png).unwrap();
            }
        }
    }

    #[test]
    fn text_is_drawn_with_the_embedded_font() {
        // A caption only: the pixels that are not white are its glyphs.
        font().unwrap();
        let png = png_of("text", |root| {
            root.draw(&Text::new("Availability 99.9%", (10, 10), (FONT, 24)))
                .map_err(draw_error("text"))
        })
        .unwrap();
        let mut decoder = png::Decoder::new(std::io::Cursor::new(png));
        // Palette images decoded to RGB.
        decoder.set_transformations(png::Transformations::EXPAND);
        let mut reader = decoder.read_info().unwrap();
        let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
        reader.next_frame(&mut pixels).unwrap();
        let inked = pixels.chunks(3).filter(|p| p != &[255, 255, 255]).count();
        assert!(inked > 500, "only {inked} pixels drawn for the text");
    }

    #[test]
    fn colours_snap_to_a_palette_of_at_most_256() {
        // 300 grey shades: too many for a palette as they are.
        let pixels: Vec<u8> = (0..300u32)
            .flat_map(|i| {
                let v = u8::try_from(i * 255 / 299).unwrap();
                [v, v, v]
            })
            .collect();
        let (palette, indices) = indexed(&pixels, &mut Vec::new()).unwrap();
        assert!(palette.len() / 3 <= 256);
        assert_eq!(indices.len(), 300);
        for (i, rgb) in pixels.chunks(3).enumerate() {
            let at = usize::from(indices[i]) * 3;
            assert!(
                palette[at].abs_diff(rgb[0]) <= 2,
                "{} vs {}",
                palette[at],
                rgb[0]
            );
        }
        // White and black stay exact; a colour moves by at most 2.
        let (palette, _) =
            indexed(&[255, 255, 255, 0, 0, 0, 0, 114, 178], &mut Vec::new()).unwrap();
        assert_eq!(palette, [255, 255, 255, 0, 0, 0, 0, 116, 180]);
    }

    #[test]
    fn an_empty_trend_still_draws() {
        let empty = Trend {
            labels: vec!["Nov 26".into()],
            services: Vec::new(),
            target: 99.9,
            incidents: vec![[0; 5]],
            mttr_hours: vec![None],
            response: vec![None],
            resolution: vec![None],
        };
        assert_eq!(draw(&empty).unwrap().len(), 4);
    }
}
