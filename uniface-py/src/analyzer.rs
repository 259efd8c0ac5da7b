//! `uniface.FaceAnalyzer`, `uniface.Face`, `uniface.Detection`.

use std::path::PathBuf;

use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray1, PyArray2, PyArray3, PyArrayMethods};
use pyo3::prelude::*;
use uniface_core::detect::{DetectOptions, FaceBox, FaceSelection};
use uniface_core::liveness::LazyLivenessDetector;
use uniface_core::model_store::ModelStore;
use uniface_core::quality::{self, Policy};

use crate::errors;
use crate::image::ImageInput;
use crate::results::{Assessment, Liveness, QualityReport};

type BoxTuple = (i64, i64, i64, i64);

/// Most threads `analyze_batch` starts for its own pool.
const MAX_THREADS: i64 = 1024;

fn box_tuple(b: &FaceBox) -> BoxTuple {
    (b.left, b.top, b.right, b.bottom)
}

fn landmarks_array(lm: &uniface_core::landmarks::Landmarks) -> Array2<f64> {
    Array2::from_shape_fn((lm.points.len(), 2), |(i, j)| {
        if j == 0 {
            lm.points[i].x
        } else {
            lm.points[i].y
        }
    })
}

/// A face-selection rule by name.
pub fn selection(name: &str) -> PyResult<FaceSelection> {
    FaceSelection::from_name(name).ok_or_else(|| {
        errors::InvalidArgumentError::new_err(format!(
            "selection must be \"largest\", \"nearest_centre\" or \"highest_score\", not {name:?}"
        ))
    })
}

/// A detected face: its box, score and (from `landmarks`) the 5 points.
#[pyclass(frozen, module = "uniface")]
pub struct Detection {
    /// `(left, top, right, bottom)` in pixels.
    #[pyo3(get, name = "box")]
    bbox: BoxTuple,
    #[pyo3(get)]
    score: f32,
    /// 5×2 float64 array (x, y) or `None` (from `detect`).
    #[pyo3(get)]
    landmarks: Option<Py<PyArray2<f64>>>,
}

#[pymethods]
impl Detection {
    fn __repr__(&self) -> String {
        format!("Detection(box={:?}, score={:.3})", self.bbox, self.score)
    }
}

/// One analysed face. The arrays are handed to numpy without copies and are read-only views
/// of the face's own buffers.
#[pyclass(frozen, module = "uniface")]
pub struct Face {
    /// `(left, top, right, bottom)` in pixels.
    #[pyo3(get, name = "box")]
    bbox: BoxTuple,
    #[pyo3(get)]
    score: f32,
    /// 5×2 float64: eye corners and nose base as dlib's 5-point model places them.
    #[pyo3(get)]
    landmarks: Py<PyArray2<f64>>,
    /// 150×150×3 uint8 RGB aligned face chip.
    #[pyo3(get)]
    chip: Py<PyArray3<u8>>,
    /// 128 float32 values.
    #[pyo3(get)]
    embedding: Py<PyArray1<f32>>,
    /// Quality measures when asked for with `quality=True`.
    #[pyo3(get)]
    quality: Option<QualityReport>,
    /// Liveness verdict when asked for with `liveness=True`.
    #[pyo3(get)]
    liveness: Option<Liveness>,
    /// True for the one face of the image that the analyzer's `selection` rule picks (the
    /// face one-face calls use), False for the others.
    #[pyo3(get)]
    selected: bool,
}

#[pymethods]
impl Face {
    fn __repr__(&self) -> String {
        format!("Face(box={:?}, score={:.3})", self.bbox, self.score)
    }
}

/// What the GIL-free part computes for one face.
struct Computed {
    face: uniface_core::Face,
    /// Whether the analyzer's `selection` rule picks this face among the image's faces.
    selected: bool,
    quality: Option<QualityReport>,
    liveness: Option<Liveness>,
}

fn to_face(py: Python<'_>, c: Computed) -> PyResult<Face> {
    let f = c.face;
    let (w, h) = (f.chip.width() as usize, f.chip.height() as usize);
    // moved into numpy: no copy of the chip or the embedding
    let chip = f.chip.into_raw().into_pyarray(py).reshape([h, w, 3])?;
    let embedding = f.embedding.to_vec().into_pyarray(py);
    let landmarks = landmarks_array(&f.landmarks).into_pyarray(py);
    Ok(Face {
        bbox: box_tuple(&f.bbox),
        score: f.bbox.score,
        landmarks: readonly(landmarks)?.unbind(),
        chip: readonly(chip)?.unbind(),
        embedding: readonly(embedding)?.unbind(),
        quality: c.quality,
        liveness: c.liveness,
        selected: c.selected,
    })
}

/// Mark an array read-only (its buffer is the face's; writing would change the result).
fn readonly<T>(a: Bound<'_, T>) -> PyResult<Bound<'_, T>> {
    a.as_any().getattr("flags")?.setattr("writeable", false)?;
    Ok(a)
}

/// Detector, landmarks and embedder (dlib's public-domain models), usable from many threads.
/// Every call releases the GIL while it works.
#[pyclass(frozen, module = "uniface")]
pub struct FaceAnalyzer {
    pub(crate) inner: uniface_core::FaceAnalyzer,
    liveness: LazyLivenessDetector,
}

impl FaceAnalyzer {
    fn detections(
        &self,
        py: Python<'_>,
        image: &Bound<'_, PyAny>,
        bgr: bool,
        with_landmarks: bool,
    ) -> PyResult<Vec<Detection>> {
        let input = ImageInput::from_py(image, bgr)?;
        let found = py
            .detach(|| {
                let img = input.load()?;
                if with_landmarks {
                    let found = self.inner.detect_landmarks(&img)?;
                    Ok(found.into_iter().map(|(b, lm)| (b, Some(lm))).collect())
                } else {
                    let found = self.inner.detect(&img)?;
                    Ok(found.into_iter().map(|b| (b, None)).collect::<Vec<_>>())
                }
            })
            .map_err(errors::core)?;
        found
            .into_iter()
            .map(|(b, lm)| {
                Ok(Detection {
                    bbox: box_tuple(&b),
                    score: b.score,
                    landmarks: lm
                        .map(|lm| {
                            readonly(landmarks_array(&lm).into_pyarray(py)).map(Bound::unbind)
                        })
                        .transpose()?,
                })
            })
            .collect()
    }

    fn compute(
        &self,
        img: &uniface_core::image::RgbImage,
        with_quality: bool,
        with_liveness: bool,
    ) -> uniface_core::Result<Vec<Computed>> {
        let faces = self.inner.analyze(img)?;
        let count = faces.len();
        let boxes: Vec<_> = faces.iter().map(|f| f.bbox).collect();
        let picked = self.inner.selection.pick(&boxes, img.width(), img.height());
        faces
            .into_iter()
            .enumerate()
            .map(|(i, face)| {
                let quality = with_quality.then(|| {
                    let q = quality::measure(img, &face.bbox, &face.landmarks, &face.chip, count);
                    QualityReport::new(&q, &[])
                });
                let liveness = if with_liveness {
                    let l = self.liveness.get()?.check(img, &face.bbox.rect())?;
                    Some(Liveness::from(&l))
                } else {
                    None
                };
                Ok(Computed {
                    face,
                    selected: picked == Some(i),
                    quality,
                    liveness,
                })
            })
            .collect()
    }
}

#[pymethods]
impl FaceAnalyzer {
    /// Load the models from `models_dir` (a folder holding the three dlib files; never
    /// downloads), or from the store (`UNIFACE_MODEL_DIR`, else the cache under
    /// `UNIFACE_HOME`, fetched and verified on first use). `upsample` doubles the image that
    /// many times before detection (finds smaller faces; clamped, with less resolution, where
    /// the canvas budget cannot hold it); `min_face_size` drops faces whose box is narrower
    /// (pixels); `max_canvas_pixels` bounds the detector's canvas (default: what a 1280×1280
    /// photo needs at upsample 1): larger photos are detected on a reduced copy.
    /// `selection` is the face that one-face calls (`assess`) use: "largest" (default),
    /// "nearest_centre" or "highest_score".
    #[new]
    #[pyo3(signature = (models_dir=None, *, upsample=1, min_face_size=0, max_canvas_pixels=None, selection="largest"))]
    fn new(
        py: Python<'_>,
        models_dir: Option<PathBuf>,
        upsample: i64,
        min_face_size: i64,
        max_canvas_pixels: Option<i64>,
        selection: &str,
    ) -> PyResult<Self> {
        let selection = self::selection(selection)?;
        use uniface_core::detect::{
            DEFAULT_MAX_CANVAS_PIXELS, MAX_CANVAS_PIXELS, MIN_CANVAS_PIXELS,
        };
        let upsample = errors::int_arg("upsample", upsample, 0, u32::MAX.into())?;
        let min_face_size = errors::int_arg("min_face_size", min_face_size, 0, u32::MAX.into())?;
        let max_canvas_pixels = errors::int_arg(
            "max_canvas_pixels",
            max_canvas_pixels.unwrap_or(DEFAULT_MAX_CANVAS_PIXELS as i64),
            MIN_CANVAS_PIXELS as i64,
            MAX_CANVAS_PIXELS as i64,
        )?;
        py.detach(|| {
            let store = match models_dir {
                Some(d) => ModelStore::offline(d),
                None => ModelStore::from_env()?,
            };
            let set = store.ensure()?;
            let options = DetectOptions {
                upsample,
                min_face_size,
                max_canvas_pixels,
                ..DetectOptions::default()
            };
            let inner = uniface_core::FaceAnalyzer::new(&set)?
                .with_options(options)
                .with_selection(selection);
            Ok(Self {
                inner,
                liveness: LazyLivenessDetector::new(store),
            })
        })
        .map_err(errors::core)
    }

    /// Face boxes and scores, best first.
    #[pyo3(signature = (image, *, bgr=false))]
    fn detect(
        &self,
        py: Python<'_>,
        image: &Bound<'_, PyAny>,
        bgr: bool,
    ) -> PyResult<Vec<Detection>> {
        self.detections(py, image, bgr, false)
    }

    /// Face boxes, scores and 5-point landmarks.
    #[pyo3(signature = (image, *, bgr=false))]
    fn landmarks(
        &self,
        py: Python<'_>,
        image: &Bound<'_, PyAny>,
        bgr: bool,
    ) -> PyResult<Vec<Detection>> {
        self.detections(py, image, bgr, true)
    }

    /// The embeddings of every face, one row each: float32 `(n, 128)`.
    #[pyo3(signature = (image, *, bgr=false))]
    fn embed<'py>(
        &self,
        py: Python<'py>,
        image: &Bound<'py, PyAny>,
        bgr: bool,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let input = ImageInput::from_py(image, bgr)?;
        let faces = py
            .detach(|| self.inner.analyze(&input.load()?))
            .map_err(errors::core)?;
        let n = faces.len();
        let flat: Vec<f32> = faces.iter().flat_map(|f| f.embedding).collect();
        flat.into_pyarray(py)
            .reshape([n, uniface_core::embed::DESCRIPTOR_DIM])
    }

    /// Every face with box, score, landmarks, chip and embedding (and quality measures or a
    /// liveness verdict when asked for).
    #[pyo3(signature = (image, *, bgr=false, quality=false, liveness=false))]
    fn analyze(
        &self,
        py: Python<'_>,
        image: &Bound<'_, PyAny>,
        bgr: bool,
        quality: bool,
        liveness: bool,
    ) -> PyResult<Vec<Face>> {
        let input = ImageInput::from_py(image, bgr)?;
        let computed = py
            .detach(|| self.compute(&input.load()?, quality, liveness))
            .map_err(errors::core)?;
        computed.into_iter().map(|c| to_face(py, c)).collect()
    }

    /// `analyze` for many images in parallel (the GIL is released for the whole batch);
    /// results in input order. The first image that fails raises. `threads` runs the batch
    /// on its own pool of that many threads (1 to 1024; default: the shared pool, one thread
    /// per core). The images worked on at once stay within 1 GiB (estimated from their
    /// sizes), whatever the thread count.
    #[pyo3(signature = (images, *, bgr=false, threads=None))]
    fn analyze_batch(
        &self,
        py: Python<'_>,
        images: Vec<Bound<'_, PyAny>>,
        bgr: bool,
        threads: Option<i64>,
    ) -> PyResult<Vec<Vec<Face>>> {
        let threads: Option<usize> = threads
            .map(|n| errors::int_arg("threads", n, 1, MAX_THREADS))
            .transpose()?;
        let inputs: Vec<ImageInput> = images
            .iter()
            .map(|i| ImageInput::from_py(i, bgr))
            .collect::<PyResult<_>>()?;
        let pool = match threads {
            Some(n) => Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .build()
                    .map_err(|e| errors::UniFaceError::new_err(e.to_string()))?,
            ),
            None => None,
        };
        let results = py.detach(|| {
            let run = || {
                uniface_core::pipeline::par_map_bounded(
                    &inputs,
                    self.inner.batch_memory,
                    |i| {
                        i.dimensions()
                            .map_or(0, |(w, h)| self.inner.working_set(w, h))
                    },
                    |i| self.compute(&i.load()?, false, false),
                )
            };
            match &pool {
                Some(p) => p.install(run),
                None => run(),
            }
        });
        results
            .into_iter()
            .map(|r| {
                r.map_err(errors::core)?
                    .into_iter()
                    .map(|c| to_face(py, c))
                    .collect()
            })
            .collect()
    }

    /// The capture gate on the analyzer's chosen face (`selection`): quality measures and
    /// reasons, and liveness when the policy requires it. `policy` is "enrollment" or
    /// "verification".
    #[pyo3(signature = (image, *, policy="enrollment", bgr=false))]
    fn assess(
        &self,
        py: Python<'_>,
        image: &Bound<'_, PyAny>,
        policy: &str,
        bgr: bool,
    ) -> PyResult<Assessment> {
        let policy = match policy {
            "enrollment" => Policy::enrollment(),
            "verification" => Policy::verification(),
            other => {
                return Err(errors::InvalidArgumentError::new_err(format!(
                    "policy must be \"enrollment\" or \"verification\", not {other:?}"
                )))
            }
        };
        let input = ImageInput::from_py(image, bgr)?;
        py.detach(|| {
            let img = input.load()?;
            let live = if policy.require_live {
                Some(self.liveness.get()?)
            } else {
                None
            };
            Ok(Assessment::from(&self.inner.assess(&img, &policy, live)?))
        })
        .map_err(errors::core)
    }

    /// The face-selection rule of one-face calls.
    #[getter]
    fn selection(&self) -> &'static str {
        self.inner.selection.name()
    }
}
