"""The phantom: synthetic lumbar T2 FSE studies written as DICOM, with ground truth and readers."""
