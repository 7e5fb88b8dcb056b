"""Clinical studies: DICOM series and volumes in, one result per study out."""
