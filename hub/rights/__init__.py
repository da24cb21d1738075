"""Patient rights: export of everything held about one patient (FHIR), erasure, and the
retention purge that deletes what a clinic no longer keeps."""
