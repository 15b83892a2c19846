"""The notebook adapter (papermill, scrapbook, nbformat, nbconvert) and the parameter contract."""
