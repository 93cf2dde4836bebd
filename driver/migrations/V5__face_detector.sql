-- Which detector found a face from a photo: 'hog', or 'cnn' when `--detector auto` fell back to
-- dlib's CNN on a photo where HOG found nothing (or `--detector cnn` was asked for). NULL for
-- faces imported as encodings, which no detector of ours has seen.
ALTER TABLE faces ADD COLUMN detector text CHECK (detector IN ('hog', 'cnn'));
