"""Readers (and the RecordIO writer) for the real on-disk layouts of face-recognition datasets."""
