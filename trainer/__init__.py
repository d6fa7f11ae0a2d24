"""Fine-tunes an ImageNet MobileNetV2 on a folder-per-class photo set and
exports versioned SavedModels that TensorFlow Serving loads as they are."""
